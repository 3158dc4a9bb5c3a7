//! SIGTERM to the API process: `/readyz` answers 503 at once and for as long as in-flight
//! requests drain, `/healthz` answers 200 until the process exits, and it exits 0 once the
//! last request is answered.

use std::time::Duration;

use metasync_tests::{
    create_source, free_port, signal, spawn_app_without_maintenance, wait_until_listening,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_while_the_api_drains() {
    let app = spawn_app_without_maintenance().await.unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let ops = format!("http://127.0.0.1:{}", free_port().unwrap());
    let ops_addr = ops.trim_start_matches("http://").to_owned();
    let mut api = app
        .spawn_api_process(
            &addr,
            &[
                ("METASYNC_METRICS_ADDR", ops_addr.as_str()),
                ("METASYNC_MAINTENANCE", "false"),
            ],
        )
        .unwrap();
    wait_until_listening(&format!("http://{addr}"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get(format!("{ops}/readyz")).await.unwrap(), 200);

    // No worker: the job stays queued, so a long-poll on it holds its request open.
    let source = create_source("create table t (id int);").await.unwrap();
    let resource = app.register("acme", "drain", &source).await.unwrap();
    let job = app.sync("acme", resource.id).await.unwrap();
    let long_poll = tokio::spawn({
        let request = http
            .get(format!("http://{addr}/v1/jobs/{}?wait=4", job.id))
            .bearer_auth(app.token("acme"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!long_poll.is_finished(), "the long-poll is in flight");

    signal(&api, "TERM").unwrap();
    let signalled = tokio::time::Instant::now();
    let mut unready = 0;
    while !long_poll.is_finished() {
        let ready = get(format!("{ops}/readyz")).await;
        let alive = get(format!("{ops}/healthz")).await;
        if api.try_wait().unwrap().is_some() {
            break;
        }
        // Once the drained long-poll is answered the API closes its listeners, which can come
        // before this task has read that answer: a refused probe then ends the loop, provided
        // the long-poll does finish.
        if ready.is_err() || alive.is_err() {
            let finished = tokio::time::timeout(Duration::from_secs(2), async {
                while !long_poll.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(
                finished.is_ok(),
                "a probe failed mid-drain: {ready:?} {alive:?}"
            );
            break;
        }
        match ready {
            Ok(503) => unready += 1,
            // The signal may still be on its way.
            Ok(200) if signalled.elapsed() < Duration::from_millis(200) => {}
            other => panic!("/readyz answered {other:?} while draining"),
        }
        assert_eq!(alive.unwrap(), 200, "/healthz while draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        unready >= 5,
        "/readyz answered 503 {unready} times in the drain"
    );

    let (status, body) = long_poll.await.unwrap();
    assert_eq!(status, 200, "the drained long-poll was answered: {body}");
    let exit = tokio::time::timeout(Duration::from_secs(10), api.wait())
        .await
        .expect("the API exits once drained")
        .unwrap();
    assert!(exit.success(), "{exit}");
}
