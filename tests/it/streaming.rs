use futures_util::StreamExt;
use sluice_client::{AttemptFailure, CallOptions, ErrorKind};
use sluice_integration::{MockRegion, Reply};

use crate::{SEOUL, TOKYO, builder, request};

/// Collects a stream: the text of every chunk, and the error item if one came.
async fn drain(mut stream: sluice_client::ChatStream) -> (String, Option<sluice_client::Error>) {
    let mut text = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => text.push_str(chunk.text().unwrap_or_default()),
            Err(e) => {
                // An error item is the last item.
                assert!(stream.next().await.is_none());
                return (text, Some(e));
            }
        }
    }
    (text, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_stream_ends_cleanly_at_done() {
    let a = MockRegion::start("seoul").await;
    let client = builder().region(a.region(SEOUL)).build().unwrap();
    let stream = client.chat_completions_stream(request()).await.unwrap();
    assert_eq!(&*stream.meta().region, "seoul");
    let (text, err) = drain(stream).await;
    assert_eq!(text, "seoul-0 seoul-1 seoul-2 ");
    assert!(err.is_none());
    assert_eq!(client.snapshot().nodes()[0].metrics().in_flight(), 0);
    // The client asked for a stream.
    let body: serde_json::Value = serde_json::from_slice(&a.state.bodies.lock()[0]).unwrap();
    assert_eq!(body["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_way_yields_an_explicit_error() {
    let a = MockRegion::start("seoul").await;
    a.always(Reply::StreamCut { chunks: 2 });
    let b = MockRegion::start("tokyo").await;
    let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
    let stream =
        client.chat_completions_stream_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
    // The guard is held while the stream is open.
    assert_eq!(client.snapshot().nodes()[0].metrics().in_flight(), 1);
    let (text, err) = drain(stream).await;
    assert_eq!(text, "seoul-0 seoul-1 ");
    let err = err.expect("a cut stream must not end as if complete");
    assert_eq!(err.kind(), &ErrorKind::StreamInterrupted { region: "seoul".into() });
    // Committed after the first chunk: no failover.
    assert_eq!((a.chat_hits(), b.chat_hits()), (1, 0));
    // Reported to health, and the guard released.
    let snapshot = client.snapshot();
    let m = snapshot.nodes()[0].metrics();
    assert_eq!(m.failures(), 1);
    assert_eq!(m.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_failing_before_its_first_chunk_fails_over() {
    for failure in [Reply::StreamEmptyCut, Reply::Status(500, vec![]), Reply::StreamCut { chunks: 0 }] {
        let a = MockRegion::start("seoul").await;
        a.always(failure.clone());
        let b = MockRegion::start("tokyo").await;
        let client = builder().regions([a.region(SEOUL), b.region(TOKYO)]).build().unwrap();
        let stream =
            client.chat_completions_stream_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
        assert_eq!(&*stream.meta().region, "tokyo", "{failure:?}");
        assert!(stream.meta().failed_over);
        assert!(
            matches!(
                stream.meta().failed_attempts[0].failure,
                AttemptFailure::FirstChunk | AttemptFailure::Status { status: 500, .. }
            ),
            "{:?}",
            stream.meta()
        );
        let (text, err) = drain(stream).await;
        assert_eq!(text, "tokyo-0 tokyo-1 tokyo-2 ");
        assert!(err.is_none());
        assert_eq!((a.chat_hits(), b.chat_hits()), (1, 1), "{failure:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_chunk_fails_over() {
    let a = MockRegion::start("seoul").await;
    a.always(Reply::StreamSlowFirst(std::time::Duration::from_secs(20)));
    let b = MockRegion::start("tokyo").await;
    let client = builder()
        .regions([a.region(SEOUL), b.region(TOKYO)])
        .timeouts(
            sluice_client::Timeouts::default()
                .attempt(std::time::Duration::from_secs(60))
                .first_chunk(std::time::Duration::from_millis(300))
                .total(std::time::Duration::from_secs(15)),
        )
        .build()
        .unwrap();
    // Only the first-chunk timeout can move this call on before its 15 s deadline.
    let stream =
        client.chat_completions_stream_with(request(), &CallOptions::new().prefer_region("seoul")).await.unwrap();
    assert_eq!(&*stream.meta().region, "tokyo");
    assert_eq!(stream.meta().failed_attempts[0].failure, AttemptFailure::FirstChunk);
    let (text, err) = drain(stream).await;
    assert_eq!(text, "tokyo-0 tokyo-1 tokyo-2 ");
    assert!(err.is_none());
    assert_eq!((a.chat_hits(), b.chat_hits()), (1, 1));
}
