//! Plain-text tables and the words used for region states.

use std::time::{Duration, Instant};

use sluice_health::NodeStatus;
use sluice_region_model::{AdminState, HealthState};

/// A left-aligned text table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each without a trailing newline.
    pub(crate) fn lines(&self) -> Vec<String> {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let fmt_row = |cells: &[String]| {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(w - cell.chars().count() + 2));
                }
            }
            line.trim_end().to_owned()
        };
        let mut out = vec![fmt_row(&self.headers)];
        out.extend(self.rows.iter().map(|r| fmt_row(r)));
        out
    }

    pub(crate) fn render(&self) -> String {
        let mut s = self.lines().join("\n");
        s.push('\n');
        s
    }
}

/// Milliseconds with one decimal below 10 ms.
pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

/// What a region's status means for traffic, in one word, plus a detail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RegionState {
    Unknown,
    Healthy,
    SlowStart(f64),
    Cooldown(Duration),
    Ejected(Duration),
    Unhealthy,
    Drained,
}

impl RegionState {
    pub(crate) fn of(status: &NodeStatus, now: Instant) -> Self {
        let left = |t: Option<Instant>| t.filter(|t| *t > now).map(|t| t.duration_since(now));
        if status.admin == AdminState::Drained {
            return RegionState::Drained;
        }
        if let Some(d) = left(status.cooldown_until) {
            return RegionState::Cooldown(d);
        }
        if let Some(d) = left(status.ejected_until) {
            return RegionState::Ejected(d);
        }
        match status.health {
            HealthState::Unhealthy => RegionState::Unhealthy,
            _ if status.weight_factor < 0.999 => RegionState::SlowStart(status.weight_factor),
            HealthState::Healthy => RegionState::Healthy,
            _ => RegionState::Unknown,
        }
    }

    /// A number for the `sluice_region_health_state` gauge.
    pub(crate) fn code(self) -> f64 {
        match self {
            RegionState::Unknown => 0.0,
            RegionState::Healthy => 1.0,
            RegionState::SlowStart(_) => 2.0,
            RegionState::Cooldown(_) => 3.0,
            RegionState::Ejected(_) => 4.0,
            RegionState::Unhealthy => 5.0,
            RegionState::Drained => 6.0,
        }
    }

    /// Whether new calls may go there.
    pub(crate) fn is_serving(self) -> bool {
        matches!(self, RegionState::Unknown | RegionState::Healthy | RegionState::SlowStart(_))
    }

    pub(crate) fn label(self) -> String {
        match self {
            RegionState::Unknown => "unknown".to_owned(),
            RegionState::Healthy => "healthy".to_owned(),
            RegionState::SlowStart(f) => format!("slow start {:.0}%", f * 100.0),
            RegionState::Cooldown(d) => format!("cooldown {:.1}s", d.as_secs_f64()),
            RegionState::Ejected(d) => format!("ejected {:.1}s", d.as_secs_f64()),
            RegionState::Unhealthy => "unhealthy".to_owned(),
            RegionState::Drained => "drained".to_owned(),
        }
    }
}

/// The clock `sluice-health` uses.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let mut t = Table::new(&["region", "state"]);
        t.row(vec!["ap-northeast-2".into(), "healthy".into()]);
        t.row(vec!["x".into(), "down".into()]);
        assert_eq!(t.lines(), ["region          state", "ap-northeast-2  healthy", "x               down"]);
        assert_eq!(ms(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(ms(Duration::from_millis(23)), "23 ms");
    }
}
