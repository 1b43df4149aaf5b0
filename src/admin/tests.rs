use super::*;

async fn serve(access: StatusAccess) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(Arc::new(AppState::default()), access);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[test]
fn status_is_open_only_on_loopback_without_a_token() {
    let token = Some(PathBuf::from("/t"));
    let open = |a: &str, t: Option<PathBuf>| StatusAccess::for_address(a.parse().unwrap(), t);
    assert!(matches!(open("127.0.0.1:1", None), StatusAccess::Open));
    assert!(matches!(open("[::1]:1", None), StatusAccess::Open));
    assert!(matches!(open("0.0.0.0:1", None), StatusAccess::Closed));
    assert!(matches!(open("10.0.0.1:1", None), StatusAccess::Closed));
    assert!(matches!(
        open("127.0.0.1:1", token.clone()),
        StatusAccess::Token(_)
    ));
    assert!(matches!(open("0.0.0.0:1", token), StatusAccess::Token(_)));
}

#[tokio::test]
async fn a_closed_status_is_forbidden_but_probes_and_metrics_are_not() {
    let url = serve(StatusAccess::Closed).await;
    let client = reqwest::Client::new();
    let status = client.get(format!("{url}/status")).send().await.unwrap();
    assert_eq!(status.status(), 403);
    for open in ["/healthz", "/metrics"] {
        let r = client.get(format!("{url}{open}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn the_token_file_is_read_at_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let url = serve(StatusAccess::Token(file.clone())).await;
    let client = reqwest::Client::new();
    let get = |token: &'static str| {
        client
            .get(format!("{url}/status"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(get("t1").await.unwrap().status(), 503, "no token file yet");
    std::fs::write(&file, "t1\n").unwrap();
    assert_eq!(get("t1").await.unwrap().status(), 200);
    assert_eq!(get("t2").await.unwrap().status(), 401);
    std::fs::write(&file, "t2").unwrap();
    assert_eq!(
        get("t1").await.unwrap().status(),
        401,
        "a rotated token replaces the old"
    );
    assert_eq!(get("t2").await.unwrap().status(), 200);
}
