//! In a real browser: headless Chromium driven through chromedriver
//! (WebDriver, the `fantoccini` crate) against real nodes on loopback.
//!
//! What a visitor and an operator see (SPEC sections 4, 5 and 8;
//! `crates/server/assets/README.md`): a page of another origin that embeds
//! `/hc.js` is counted across the cluster and shows live numbers; back and
//! forward navigation leaves no ghost visitor; the dashboard at `/` shows what
//! the API says, pushed, with no console error, at desktop and phone widths
//! (screenshots in `target/browser/`; with `HEADCOUNT_UPDATE_SCREENSHOT=1` the
//! desktop one also becomes `docs/dashboard.png`), and a chosen topic's visit
//! history as `/stats/{topic}` answers it, sent the admin token, refreshed
//! every 10 s, or that history is off (SPEC section 9). Two checks need no browser:
//! `/hc.js` is small and cacheable, and `/live/counts` is a watcher under the
//! per-IP cap.
//!
//! The browser tests need `chromedriver` and `chromium` on `PATH`. Without
//! them they print "browser tests skipped: chromedriver/chromium not
//! installed" and pass, except with `CI=true`, where a missing browser fails.
//! Each test starts its own chromedriver on a free port, leading its own
//! process group, and kills the group (chromedriver and every Chromium it
//! started) when the test ends, panics included. Every wait polls a condition
//! until a deadline; nothing sleeps a fixed time.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr,
    time::Duration,
};

use fantoccini::{
    Client, ClientBuilder, Locator,
    wd::{Capabilities, WebDriverCompatibleCommand},
};
use headcount_server::AdminToken;
use headcount_tests::{PageServer, TestNode, Ws, close, eventually, test_config, wait_for_members, ws_connect};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{Method, StatusCode, Url, header};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

/// How long a page or a count may take to show a change.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_page_counts_across_the_cluster() {
    let Some(driver) = Driver::start().await else { return };
    let nodes = cluster(&["a", "b", "c"]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let pages = PageServer::start(vec![("/", embed_page(a.http, "site.test/page"))]).await;

    let first = driver.session().await;
    first.goto(&pages.url("/")).await.expect("open the page");
    wait_count(c, "site.test/page", 1).await;
    wait_text(&first, "#here", "1").await;
    wait_text(&first, "#site", "1").await;

    let second = driver.session().await;
    second.goto(&pages.url("/")).await.expect("open the page again");
    wait_count(c, "site.test/page", 2).await;
    wait_text(&first, "#here", "2").await;
    wait_text(&second, "#here", "2").await;

    second.close().await.expect("close the second visitor");
    wait_count(c, "site.test/page", 1).await;
    wait_text(&first, "#here", "1").await;

    let _reader = b.connect("site.test/other").await;
    wait_text(&first, "#other", "1").await;
    wait_text(&first, "#site", "2").await;
    assert_eq!(console_errors(&first).await, Vec::<String>::new());
    first.close().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_forward_navigation_leaves_no_ghost() {
    let Some(driver) = Driver::start().await else { return };
    let node = TestNode::start(test_config("a")).await;
    let pages = PageServer::start(vec![
        ("/one", embed_page(node.http, "site.test/one")),
        ("/two", embed_page(node.http, "site.test/two")),
    ])
    .await;
    let counts = || async { (node.count("site.test/one").await, node.count("site.test/two").await) };
    let settles_on = |expected: (u64, u64)| async move {
        eventually(WAIT, &format!("(one, two) counts {expected:?}"), || async {
            counts().await == expected
        })
        .await;
        // A ghost is a socket left open: it would show within a few pushes.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            assert_eq!(counts().await, expected, "(one, two) counts moved after settling");
            tokio::time::sleep(POLL).await;
        }
    };

    let browser = driver.session().await;
    browser.goto(&pages.url("/one")).await.expect("open page one");
    settles_on((1, 0)).await;
    // hc.js closes its sockets on pagehide, so the page may enter the cache.
    js(&browser, "window.beforeLeaving = true").await;
    browser.goto(&pages.url("/two")).await.expect("go to page two");
    settles_on((0, 1)).await;
    browser.back().await.expect("back to page one");
    settles_on((1, 0)).await;
    wait_text(&browser, "#here", "1").await;
    let restored = js(&browser, "return window.beforeLeaving === true").await;
    assert_eq!(restored, json!(true), "page one came back from the back/forward cache");
    browser.forward().await.expect("forward to page two");
    settles_on((0, 1)).await;
    wait_text(&browser, "#here", "1").await;
    assert_eq!(console_errors(&browser).await, Vec::<String>::new());
    browser.close().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says() {
    let Some(driver) = Driver::start().await else { return };
    let nodes = cluster(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut readers = a.connect_n("site.test/a", 3).await;
    let _other = b.connect("site.test/b").await;
    eventually(WAIT, "the API counts 4", || async {
        a.get("/counts").await.1["total"] == 4
    })
    .await;

    let browser = driver.session().await;
    browser
        .goto(&format!("http://{}/", a.http))
        .await
        .expect("open the dashboard");
    wait_text(&browser, "#total", "4").await;
    wait_text(&browser, "#status", "live").await;
    wait_value(
        &browser,
        TOPIC_ROWS,
        json!([["site.test/a", "3"], ["site.test/b", "1"]]),
    )
    .await;
    wait_value(&browser, MEMBER_ROWS, json!([["a", "alive"], ["b", "alive"]])).await;
    let drawn = "return (document.querySelector('#chart path.line')?.getAttribute('d') ?? '').includes('L')";
    wait_value(&browser, drawn, json!(true)).await;

    js(&browser, "window.sameDocument = true").await;
    close(readers.pop().expect("a reader")).await;
    wait_text(&browser, "#total", "3").await;
    wait_value(
        &browser,
        TOPIC_ROWS,
        json!([["site.test/a", "2"], ["site.test/b", "1"]]),
    )
    .await;
    assert_eq!(
        js(&browser, "return window.sameDocument").await,
        json!(true),
        "pushed, not reloaded"
    );
    let charted = "return document.getElementById('chart-summary').textContent.startsWith('now 3')";
    wait_value(&browser, charted, json!(true)).await;

    // The topic panel of the screenshot: a topic picked, with its history.
    let pick = "#topics tr[data-topic='site.test/a'] .pick";
    let row = browser.find(Locator::Css(pick)).await.expect("the site.test/a row");
    row.click().await.expect("pick site.test/a");
    wait_text(&browser, "#topic-count", "2").await;
    // Settled: 3 views, and a peak sampled since (3, or 2 if sampled only
    // after a reader left); neither moves again in this test.
    let settled = |stats: &Value| stats["views"] == 3 && stats["peak"].as_u64() >= Some(2);
    let stats = wait_stats(a, "site.test/a", settled).await;
    wait_value(&browser, HISTORY_SHOWN, shown_history(&stats)).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    std::fs::create_dir_all(&shots).expect("create target/browser");
    screenshot(&browser, 1440, 0, &shots.join("dashboard-1440.png")).await;
    screenshot(&browser, 375, 800, &shots.join("dashboard-375.png")).await;
    if std::env::var("HEADCOUNT_UPDATE_SCREENSHOT").is_ok_and(|value| value == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(shots.join("dashboard-1440.png"), docs).expect("update docs/dashboard.png");
    }

    let prefix = browser.find(Locator::Css("#prefix")).await.expect("#prefix");
    prefix.send_keys("site.test/b").await.expect("type a prefix");
    wait_value(&browser, TOPIC_ROWS, json!([["site.test/b", "1"]])).await;
    wait_text(&browser, "#prefix-total", "1").await;
    wait_text(&browser, "#total", "3").await;
    assert_eq!(console_errors(&browser).await, Vec::<String>::new());
    browser.close().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_topic_s_visit_history() {
    let Some(driver) = Driver::start().await else { return };
    let mut config = test_config("a");
    config.admin_token = Some(AdminToken::new(TOKEN).expect("valid token"));
    let node = TestNode::start(config).await;
    let topic = "site.test/history";
    // Five views by two visitors, all five on the page at once: peak 5.
    let mut sockets = Vec::new();
    for agent in ["Agent/1", "Agent/1", "Agent/1", "Agent/2", "Agent/2"] {
        sockets.push(visit(&node, topic, agent).await);
    }
    let expected = |views: u64, visitors: u64, peak: u64| {
        move |stats: &Value| stats["views"] == views && stats["visitors"] == visitors && stats["peak"] == peak
    };
    let stats = wait_stats(&node, topic, expected(5, 2, 5)).await;
    for socket in sockets {
        close(socket).await;
    }

    let browser = driver.session().await;
    browser
        .goto(&format!("http://{}/", node.http))
        .await
        .expect("open the dashboard");
    let input = browser
        .find(Locator::Css("#token-input"))
        .await
        .expect("the token form");
    input.send_keys(TOKEN).await.expect("type the token");
    browser
        .find(Locator::Css("#token-form button"))
        .await
        .expect("Unlock")
        .click()
        .await
        .expect("unlock");
    wait_text(&browser, "#status", "live").await;
    // Before the token: the page and its first requests were answered 401.
    for error in console_errors(&browser).await {
        assert!(error.contains("401"), "before the token: {error}");
    }

    pick_topic(&browser, topic).await;
    wait_value(&browser, HISTORY_SHOWN, shown_history(&stats)).await;
    let days = stats["days"].as_array().expect("days");
    let today = days.last().expect("today");
    let chart = "const hits = [...document.querySelectorAll('#history-chart .hits rect')]; \
                 const last = hits[hits.length - 1]; \
                 return [hits.length, document.querySelectorAll('#history-chart rect.bar.views').length, \
                         last.dataset.date, last.textContent]";
    let title = format!("{}: 5 views, 2 visitors, peak 5", today["date"].as_str().expect("date"));
    let with_views = days.iter().filter(|day| day["views"].as_u64() > Some(0)).count();
    assert_eq!(
        js(&browser, chart).await,
        json!([days.len(), with_views, stats["to"], title]),
        "one column per day, a bar per day with views, today's numbers last"
    );
    let label = "return document.getElementById('history-chart').getAttribute('aria-label')";
    let label = js(&browser, label).await;
    assert!(
        label.as_str().is_some_and(|text| text.contains("5 views, 2 visitors")),
        "{label}"
    );

    // A new view shows within one refresh (every 10 s), with no reload.
    js(&browser, "window.sameDocument = true").await;
    close(visit(&node, topic, "Agent/3").await).await;
    let stats = wait_stats(&node, topic, expected(6, 3, 5)).await;
    wait_value(&browser, HISTORY_SHOWN, shown_history(&stats)).await;
    assert_eq!(js(&browser, "return window.sameDocument").await, json!(true));

    // Another topic: its own history, and the first one is no longer fetched.
    pick_topic(&browser, "site.test/quiet").await;
    let quiet = wait_stats(&node, "site.test/quiet", |_| true).await;
    wait_value(&browser, HISTORY_SHOWN, shown_history(&quiet)).await;
    assert_eq!(quiet["views"], 0, "{quiet}");
    assert_eq!(console_errors(&browser).await, Vec::<String>::new());
    browser.close().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_the_dashboard_says_history_is_off() {
    let Some(driver) = Driver::start().await else { return };
    let node = TestNode::start_without_history(test_config("a")).await;
    let (status, body) = node.get("/stats/site.test/a").await;
    assert_eq!(status, 404, "{body}");

    let browser = driver.session().await;
    browser
        .goto(&format!("http://{}/", node.http))
        .await
        .expect("open the dashboard");
    wait_text(&browser, "#status", "live").await;
    pick_topic(&browser, "site.test/a").await;
    let shown = "const panel = document.getElementById('topic-history'); \
                 return [panel.dataset.state, document.getElementById('history-message').textContent, \
                         document.getElementById('history-body').hidden]";
    wait_value(
        &browser,
        shown,
        json!([
            "off",
            "Visit history is off on this node (started with --no-history).",
            true
        ]),
    )
    .await;
    // The browser reports the 404 itself; nothing else may fail.
    for error in console_errors(&browser).await {
        assert!(error.contains("/stats/site.test/a") && error.contains("404"), "{error}");
    }
    browser.close().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hc_js_is_served_small_and_cacheable() {
    let node = TestNode::start(test_config("a")).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/hc.js", node.http);
    let gzip = || client.get(&url).header(header::ACCEPT_ENCODING, "gzip");

    let response = gzip().send().await.expect("GET /hc.js");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(
        headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    let cache = headers.get(header::CACHE_CONTROL).expect("Cache-Control");
    assert!(cache.to_str().is_ok_and(|v| v.contains("max-age")), "{cache:?}");
    let etag = headers.get(header::ETAG).expect("ETag").clone();
    let body = response.bytes().await.expect("body");
    assert!(body.starts_with(&[0x1f, 0x8b]), "a gzip stream");
    assert!(body.len() <= 1024, "hc.js is {} bytes gzipped", body.len());

    let again = gzip()
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_counts_is_a_watcher_under_the_limits() {
    let mut config = test_config("capped");
    config.max_connections_per_ip = 2;
    let capped = TestNode::start(config).await;
    let (http, path) = (capped.http, "/live/counts?prefix=&limit=10");
    let watch = "/ws/site.test/x?watch=1";

    let (_first, event) = live(http, path).await.expect("a first stream is admitted");
    assert_eq!(event["total"], 0, "{event}");
    let socket = ws_connect(http, watch).await.expect("a watch socket is admitted");
    assert_eq!(live(http, path).await.err(), Some(StatusCode::TOO_MANY_REQUESTS));
    close(socket).await;
    let deadline = Instant::now() + WAIT;
    let _second = loop {
        match live(http, path).await {
            Ok(stream) => break stream,
            Err(status) => assert!(Instant::now() < deadline, "the closed socket's place: {status}"),
        }
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(live(http, path).await.err(), Some(StatusCode::TOO_MANY_REQUESTS));
    match ws_connect(http, watch).await.map(drop) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a watch socket over the cap: {other:?}"),
    }

    let node = TestNode::start(test_config("b")).await;
    let _site = node.connect_n("site.test/a", 2).await;
    let _elsewhere = node.connect("other.test/a").await;
    eventually(WAIT, "the API counts 3", || async {
        node.get("/counts").await.1["total"] == 3
    })
    .await;
    let (_stream, event) = live(node.http, "/live/counts?limit=0&prefix=site.test/")
        .await
        .expect("a total stream");
    assert_eq!(event, json!({"total": 2, "topics": []}));
}

// ----------------------------------------------------------------- browser

/// chromedriver, our child, leading its own process group.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Driver {
    /// Starts chromedriver and waits until it is ready; `None` (said on
    /// stdout) when the browser is not installed, a failure with `CI=true`.
    async fn start() -> Option<Self> {
        let found = find_on_path(&["chromedriver"]).zip(find_on_path(&["chromium", "chromium-browser"]));
        let Some((chromedriver, chromium)) = found else {
            let ci = std::env::var("CI").is_ok_and(|value| value == "true");
            assert!(
                !ci,
                "CI=true: chromedriver/chromium not installed, browser tests cannot run"
            );
            println!("browser tests skipped: chromedriver/chromium not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
        };
        let status = format!("{}/status", driver.url);
        eventually(WAIT, "chromedriver answers /status", || async {
            let Ok(response) = reqwest::get(&status).await else {
                return false;
            };
            response
                .json::<Value>()
                .await
                .is_ok_and(|body| body["value"]["ready"] == true)
        })
        .await;
        Some(driver)
    }

    /// A new browser session: its own Chromium and profile, so its own visitor.
    async fn session(&self) -> Client {
        let mut capabilities = Capabilities::new();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1440,900",
        ];
        let binary = self.chromium.to_string_lossy();
        capabilities.insert("goog:chromeOptions".into(), json!({"binary": binary, "args": args}));
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        builder.connect(&self.url).await.expect("chromedriver opens a session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill").args(["-KILL", "--", &group]).status();
        if !killed.is_ok_and(|status| status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|file| file.is_file())
    })
}

/// chromedriver's log endpoint: the console messages since the last read
/// (kept because of `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, <Url as FromStr>::Err> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// The console errors (level SEVERE: `console.error`, uncaught exceptions,
/// failed requests) since the last read.
async fn console_errors(client: &Client) -> Vec<String> {
    let entries = client.issue_cmd(BrowserLog).await.expect("the browser log");
    entries
        .as_array()
        .expect("log entries")
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Top topics on the dashboard: `[topic, count]` in the order shown.
const TOPIC_ROWS: &str = "return [...document.querySelectorAll('#topics tr[data-topic]')]\
                          .map(row => [row.dataset.topic, row.querySelector('.count').textContent])";
/// Members on the dashboard: `[name, state]`, by name.
const MEMBER_ROWS: &str = "return [...document.querySelectorAll('#members tr[data-member]')]\
                           .map(row => [row.dataset.member, row.querySelector('.state').textContent]).sort()";

/// The topic panel's history: `[state, views, visitors, peak today]`.
const HISTORY_SHOWN: &str = "return [document.getElementById('topic-history').dataset.state, \
                             ...['views', 'visitors', 'peak'].map(id => \
                             document.getElementById('history-' + id).textContent)]";

/// What [`HISTORY_SHOWN`] returns for a `/stats/{topic}` answer: its totals
/// and the last day's (today's) peak.
fn shown_history(stats: &Value) -> Value {
    let peak = &stats["days"].as_array().and_then(|days| days.last()).expect("a day")["peak"];
    json!([
        "ready",
        stats["views"].to_string(),
        stats["visitors"].to_string(),
        peak.to_string()
    ])
}

/// Types `topic` into the topic panel and watches it.
async fn pick_topic(client: &Client, topic: &str) {
    let input = client.find(Locator::Css("#topic-input")).await.expect("#topic-input");
    input.clear().await.expect("clear the topic");
    input.send_keys(topic).await.expect("type a topic");
    let watch = client.find(Locator::Css("#topic-form button")).await.expect("Watch");
    watch.click().await.expect("watch the topic");
    wait_text(client, "#topic-name", topic).await;
}

async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.expect("the script runs")
}

/// Waits until `script` returns `expected`.
async fn wait_value(client: &Client, script: &str, expected: Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = js(client, script).await;
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{script}\nshows {seen}, not {expected}, after {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the element at `css` shows `expected`.
async fn wait_text(client: &Client, css: &str, expected: &str) {
    let script = format!("return document.querySelector({css:?})?.textContent ?? null");
    wait_value(client, &script, json!(expected)).await;
}

/// Sets the viewport (not the window) to `width`×`height` (height 0: the
/// whole page at that width) and saves a PNG once the charts have been
/// redrawn for that width.
async fn screenshot(client: &Client, width: u32, height: u32, file: &Path) {
    let height = if height == 0 {
        resize_viewport(client, width, 900).await;
        let page = js(client, "return document.documentElement.scrollHeight").await;
        page.as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .expect("the page's height")
    } else {
        height
    };
    resize_viewport(client, width, height).await;
    for chart in ["chart", "history-chart"] {
        let redrawn = format!(
            "const c = document.getElementById('{chart}'); \
             return c.getClientRects().length === 0 \
             || c.viewBox.baseVal.width === Math.max(Math.round(c.getBoundingClientRect().width), 200)"
        );
        wait_value(client, &redrawn, json!(true)).await;
    }
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(file, png).expect("save the screenshot");
}

/// Sets the viewport (not the window) to `width`×`height`.
async fn resize_viewport(client: &Client, width: u32, height: u32) {
    // The window is larger than the viewport by a frame: measure it, then grow.
    client.set_window_size(width, height).await.expect("resize");
    let inner = js(client, "return [innerWidth, innerHeight]").await;
    let outer = |want: u32, seen: &Value| {
        (2 * want).saturating_sub(seen.as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(want))
    };
    let (outer_w, outer_h) = (outer(width, &inner[0]), outer(height, &inner[1]));
    client.set_window_size(outer_w, outer_h).await.expect("resize");
    wait_value(client, "return [innerWidth, innerHeight]", json!([width, height])).await;
}

// ------------------------------------------------------------------ pages

/// A page counted toward `topic`, showing its own count, another topic's
/// and the site total, with the embed script from `node`.
fn embed_page(node: SocketAddr, topic: &str) -> String {
    format!(
        "<!doctype html><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>{topic}</title>\
         <p>here: <span id=\"here\" data-headcount></span></p>\
         <p>other: <span id=\"other\" data-headcount=\"site.test/other\"></span></p>\
         <p>site: <span id=\"site\" data-headcount-prefix=\"site.test/\"></span></p>\
         <script async src=\"http://{node}/hc.js\" data-topic=\"{topic}\" data-count-bots></script>"
    )
}

// ------------------------------------------------------------------ nodes

async fn cluster(names: &[&str]) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for name in names {
        let mut config = test_config(name);
        config.seeds = nodes.iter().map(|node| node.gossip.to_string()).collect();
        nodes.push(TestNode::start(config).await);
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_for_members(&refs, names.len() as u64, WAIT).await;
    nodes
}

/// The admin token of the nodes that have one.
const TOKEN: &str = "an-admin-token-for-browser-tests";

/// A counted websocket on `topic` sent with `user_agent`.
async fn visit(node: &TestNode, topic: &str, user_agent: &str) -> Ws {
    let mut request = format!("ws://{}/ws/{topic}", node.http)
        .into_client_request()
        .expect("request");
    let agent = HeaderValue::from_str(user_agent).expect("ascii");
    request.headers_mut().insert("user-agent", agent);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
    socket
}

/// Waits until `GET /stats/{topic}` (sent the admin token, which a node
/// without one ignores) answers what `check` accepts, and returns that answer.
async fn wait_stats(node: &TestNode, topic: &str, check: impl Fn(&Value) -> bool) -> Value {
    let url = format!("http://{}/stats/{topic}", node.http);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let response = client.get(&url).bearer_auth(TOKEN).send().await.expect("GET /stats");
        assert_eq!(response.status(), StatusCode::OK, "GET /stats/{topic}");
        let stats: Value = response.json().await.expect("JSON");
        if check(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "/stats/{topic} answers {stats} after {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_count(node: &TestNode, topic: &str, expected: u64) {
    let what = format!("{} counts {expected} on {topic}", node.name);
    eventually(WAIT, &what, || async { node.count(topic).await == expected }).await;
}

/// Opens a `/live/…` stream and reads its first event's data; the stream
/// stays open while the response lives. An HTTP error is returned as is.
async fn live(addr: SocketAddr, path: &str) -> Result<(reqwest::Response, Value), StatusCode> {
    let mut response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET a live stream");
    if !response.status().is_success() {
        return Err(response.status());
    }
    let deadline = Instant::now() + WAIT;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await;
        let chunk = chunk
            .expect("a first event in time")
            .expect("the stream")
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let event = text.split("\n\n").next().unwrap_or_default();
    let data = event
        .strip_prefix("data: ")
        .filter(|data| data.starts_with("{\"total\":"));
    let data = serde_json::from_str(data.expect("a listing")).expect("the event's data is JSON");
    Ok((response, data))
}
