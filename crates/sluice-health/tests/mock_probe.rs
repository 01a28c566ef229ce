//! The mockall `MockProbe` (feature `mock`) driving the prober.

use std::{sync::Arc, time::Duration};

use sluice_health::{HealthMonitor, MockProbe, OutlierConfig, ProbeConfig, ProbeError};
use sluice_region_model::{GeoPoint, HealthState, Region, Snapshot};
use tokio::time::{Instant, sleep_until};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn mock_probe_drives_health() {
    let regions = [Region::new("only", "http://127.0.0.1:9/v1", GeoPoint::new(0.0, 0.0))];
    let snapshot = Arc::new(Snapshot::builder().epoch(Instant::now().into_std()).build(regions).unwrap());
    let monitor = HealthMonitor::new(snapshot, OutlierConfig::default());
    let mut mock = MockProbe::new();
    let mut seq = mockall::Sequence::new();
    mock.expect_probe().times(1).in_sequence(&mut seq).returning(|_| Ok(Duration::from_millis(7)));
    mock.expect_probe().times(2).in_sequence(&mut seq).returning(|_| Err(ProbeError::Status { status: 503 }));
    mock.expect_probe().returning(|_| Ok(Duration::from_millis(7)));
    let config = ProbeConfig::builder().initial_jitter(Duration::ZERO).jitter(Duration::ZERO).build().unwrap();
    let start = Instant::now();
    let prober = monitor.spawn_prober(Arc::new(mock), config);
    let metrics = Arc::clone(monitor.snapshot().nodes()[0].metrics());
    sleep_until(start + Duration::from_millis(500)).await;
    assert_eq!(metrics.health(), HealthState::Healthy);
    assert_eq!(metrics.probe_rtt(), Some(Duration::from_millis(7)));
    sleep_until(start + Duration::from_millis(2500)).await;
    assert_eq!(metrics.health(), HealthState::Unhealthy);
    prober.shutdown().await;
    assert_eq!(monitor.probe_tasks(), 0);
}
