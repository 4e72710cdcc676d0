//! `/debug/pprof/*`: profiles decode as pprof and name this crate's code;
//! CPU samples are labelled with the call they were taken in; bad
//! requests, concurrent CPU profiles and missing tokens are refused.

use std::io::Read;

use catalogue::api::proto::catalogue_service_client::CatalogueServiceClient;
use catalogue::api::proto::{GetProductRequest, SearchRequest};
use flate2::read::GzDecoder;
use pprof::protos::{Message, Profile};

use crate::helpers::{TestApp, seed_products};

/// The SIGPROF sampler is one per process, and this test binary runs many
/// apps in one: a test that takes a CPU profile holds this first, so the
/// profile is its own, never a 409 because another test's is running.
static CPU_PROFILER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn memory_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// Calls GetProduct and SearchProducts in a loop until aborted.
fn drive_traffic(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let mut client = app.client.clone();
    let ids: Vec<String> = seed_products()
        .into_iter()
        .map(|product| product.id)
        .collect();
    tokio::spawn(async move {
        for id in ids.iter().cycle() {
            client
                .get_product(GetProductRequest {
                    product_id: id.clone(),
                })
                .await
                .expect("GetProduct answers");
            client
                .search_products(SearchRequest {
                    query: "oak".into(),
                    page_size: 20,
                    ..Default::default()
                })
                .await
                .expect("SearchProducts answers");
        }
    })
}

async fn get(url: String) -> reqwest::Response {
    reqwest::get(url).await.expect("admin answers")
}

/// Fetches `path` while the app serves GetProduct and SearchProducts, and
/// checks the answer is a 200 of `content_type`.
async fn get_under_traffic(app: &TestApp, path: &str, content_type: &str) -> reqwest::Response {
    let traffic = drive_traffic(app);
    let response = get(app.admin_url(path)).await;
    traffic.abort();
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(response.headers()["content-type"], content_type, "{path}");
    response
}

/// 32 MiB kept live while a heap profile is taken: jemalloc samples one
/// allocation per 512 KiB on average, so this one is all but certain to be
/// in the profile, under this function's name.
#[inline(never)]
fn heap_ballast() -> Vec<u8> {
    std::hint::black_box(vec![1_u8; 32 << 20])
}

/// Checks `response` is the attachment `{name}.pb.gz`, then gunzips and
/// decodes it as pprof protobuf.
async fn pprof_attachment(response: reqwest::Response, name: &str) -> Profile {
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"{name}.pb.gz\"")
    );
    let gzipped = response.bytes().await.expect("profile body");
    let mut bytes = Vec::new();
    GzDecoder::new(&gzipped[..])
        .read_to_end(&mut bytes)
        .expect("the profile is gzipped");
    Profile::parse_from_bytes(&bytes).expect("the profile is pprof protobuf")
}

fn function_names(profile: &Profile) -> Vec<&str> {
    profile
        .function
        .iter()
        .map(|function| profile.string_table[function.name as usize].as_str())
        .collect()
}

/// The files of the mappings that do not say they are symbolised although
/// another mapping of the same binary holds symbolised locations.
/// `go tool pprof` merges a binary's mappings into its first one and, if
/// that one is not flagged, symbolises the binary again with Go's DWARF
/// reader: short `DW_AT_name`s (`{async_block#2}`, `poll`) and no inlined
/// frames.
fn unflagged_mappings(profile: &Profile) -> Vec<&str> {
    let symbolised: std::collections::HashSet<i64> = profile
        .location
        .iter()
        .filter(|location| !location.line.is_empty())
        .filter_map(|location| {
            profile
                .mapping
                .iter()
                .find(|mapping| mapping.id == location.mapping_id)
        })
        .map(|mapping| mapping.build_id)
        .collect();
    profile
        .mapping
        .iter()
        .filter(|mapping| symbolised.contains(&mapping.build_id) && !mapping.has_functions)
        .map(|mapping| profile.string_table[mapping.filename as usize].as_str())
        .collect()
}

/// A CPU profile of a busy memory app, the profiler held while it runs
/// (the answer comes once the profile is complete).
async fn cpu_profile_under_traffic(path: &str, content_type: &str) -> reqwest::Response {
    let _profiler = CPU_PROFILER.lock().await;
    let app = memory_app().await;
    get_under_traffic(&app, path, content_type).await
}

/// The process's CPU seconds so far (`utime + stime`, in 100 Hz ticks).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let (_, fields) = stat.rsplit_once(')').expect("stat has a name");
    let mut fields = fields.split_whitespace().skip(11);
    let mut next = || fields.next().unwrap().parse::<f64>().unwrap();
    (next() + next()) / 100.0
}

#[tokio::test]
async fn cpu_profile_names_frames_with_their_module_paths() {
    let response = cpu_profile_under_traffic(
        "/debug/pprof/profile?seconds=2&frequency=500",
        "application/octet-stream",
    )
    .await;

    let profile = pprof_attachment(response, "profile").await;
    assert!(!profile.sample.is_empty(), "no samples");
    let names = function_names(&profile);
    for module in ["catalogue::api::", "catalogue::grpc::"] {
        assert!(
            names.iter().any(|name| name.contains(module)),
            "no frame of {module} in {names:?}"
        );
    }
}

#[tokio::test]
async fn cpu_profile_accounts_for_the_cpu_the_process_used_system_calls_included() {
    let before = process_cpu_seconds();
    let response =
        cpu_profile_under_traffic("/debug/pprof/profile?seconds=5", "application/octet-stream")
            .await;
    let used_around = process_cpu_seconds() - before;

    let coverage: f64 = response.headers()["x-profile-coverage"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let seconds = response.headers()["x-profile-cpu-seconds"]
        .to_str()
        .unwrap()
        .to_owned();
    eprintln!("coverage {coverage} {seconds} (process used {used_around:.2}s around the request)");
    let used_in_window: f64 = seconds
        .split_once("used=")
        .and_then(|(_, used)| used.strip_suffix('s'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        used_in_window <= used_around + 0.02,
        "{seconds}: the window is within the request ({used_around:.2}s)"
    );
    assert!(coverage >= 0.9, "coverage {coverage}: {seconds}");
    let profile = pprof_attachment(response, "profile").await;
    let names = function_names(&profile);
    // glibc's wrappers resolve to their public name or to an internal
    // alias of it (`__GI___writev`, `__libc_write`), whichever the
    // symboliser finds first. Any of the calls a server makes will do: a
    // profile of a starved process holds few samples (0.45 s of 5 once,
    // under a full test run, whose only system call was `__libc_recv`).
    let bare = |name: &str| {
        let name = name.trim_start_matches("__GI___");
        name.trim_start_matches("__libc_").to_owned()
    };
    assert!(
        names.iter().any(|name| [
            "write",
            "writev",
            "send",
            "sendto",
            "sendmsg",
            "epoll_wait",
            "epoll_pwait",
            "recv",
            "recvfrom",
            "recvmsg",
            "read",
            "readv"
        ]
        .contains(&bare(name).as_str())),
        "no system call's frame in {names:?}"
    );
}

#[tokio::test]
async fn twenty_cpu_profiles_back_to_back_under_load_leave_the_service_healthy() {
    let _profiler = CPU_PROFILER.lock().await;
    let mut app = memory_app().await;
    let traffic = drive_traffic(&app);

    for round in 0..20 {
        let response = get(app.admin_url("/debug/pprof/profile?seconds=1&frequency=250")).await;
        assert_eq!(response.status(), 200, "profile {round}");
        pprof_attachment(response, "profile").await;
    }

    assert!(!traffic.is_finished(), "traffic kept being served");
    traffic.abort();
    app.get_product("prod-0000001")
        .await
        .expect("still serving");
    assert_eq!(get(app.admin_url("/healthz")).await.status(), 200);
    app.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn cpu_profile_as_flamegraph_is_svg() {
    let response = cpu_profile_under_traffic(
        "/debug/pprof/profile?seconds=1&format=flamegraph",
        "image/svg+xml",
    )
    .await;

    let svg = response.text().await.unwrap();
    assert!(svg.contains("<svg"), "{svg}");
}

#[tokio::test]
async fn a_second_concurrent_cpu_profile_is_refused_with_409() {
    let _profiler = CPU_PROFILER.lock().await;
    let app = memory_app().await;
    let url = app.admin_url("/debug/pprof/profile?seconds=5");

    // Whichever request gets the profiler runs for five seconds; the other
    // is refused at once. Both are awaited, so the profiler is free again
    // when the lock is.
    let (first, second) = tokio::join!(get(url.clone()), get(url));

    let (refused, profiled) = if first.status() == 409 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(refused.status(), 409);
    assert_eq!(profiled.status(), 200);
    let message = refused.text().await.unwrap();
    assert!(message.contains("already"), "{message}");
}

#[tokio::test]
async fn out_of_range_or_malformed_parameters_are_400_with_a_message() {
    let app = memory_app().await;

    for (query, parameter) in [
        ("seconds=0", "seconds"),
        ("seconds=abc", "seconds"),
        ("seconds=301", "seconds"),
        ("seconds=1&frequency=0", "frequency"),
        ("seconds=1&format=pdf", "format"),
        ("seconds=1&rpc_method=DeleteProduct", "rpc_method"),
    ] {
        let response = get(app.admin_url(&format!("/debug/pprof/profile?{query}"))).await;
        assert_eq!(response.status(), 400, "{query}");
        let message = response.text().await.unwrap();
        assert!(message.starts_with(parameter), "{query}: {message}");
    }
}

#[tokio::test]
async fn heap_profile_decodes_and_holds_allocation_samples() {
    let app = memory_app().await;
    let ballast = heap_ballast();

    let response = get_under_traffic(&app, "/debug/pprof/heap", "application/octet-stream").await;

    let profile = pprof_attachment(response, "heap").await;
    assert!(!profile.sample.is_empty(), "no allocation samples");
    let names = function_names(&profile);
    assert!(
        names.iter().any(|name| name.contains("heap_ballast")),
        "the ballast's allocation site is missing from {names:?}"
    );
    drop(ballast);
}

#[tokio::test]
async fn heap_profile_under_the_leak_fault_names_the_leaking_function() {
    let mut app = TestApp::builder().args(&["--enable-faults"]).spawn().await;
    app.put_faults(r#"{"leak_bytes_per_call": 1048576}"#).await;
    for _ in 0..32 {
        app.get_product("prod-0000001").await.expect("served");
    }

    let response = get(app.admin_url("/debug/pprof/heap")).await;

    assert_eq!(response.status(), 200);
    let profile = pprof_attachment(response, "heap").await;
    let names = function_names(&profile);
    assert!(
        names
            .iter()
            .any(|name| name.contains("catalogue::faults::FaultInjector::before_call")),
        "the leak's allocation site is missing from {names:?}"
    );
    assert!(
        names.iter().all(|name| !name.starts_with('{')),
        "a function is named by its DWARF name only: {names:?}"
    );
    let unflagged = unflagged_mappings(&profile);
    assert!(
        unflagged.is_empty(),
        "go tool pprof would symbolise these again: {unflagged:?}"
    );
    let reset = reqwest::Client::new()
        .delete(app.admin_url("/faults"))
        .send();
    assert_eq!(
        reset.await.expect("admin answers").status(),
        200,
        "frees the leak"
    );
}

#[tokio::test]
async fn heap_profile_as_flamegraph_is_svg() {
    let app = memory_app().await;
    let ballast = heap_ballast();

    let response =
        get_under_traffic(&app, "/debug/pprof/heap?format=flamegraph", "image/svg+xml").await;

    let svg = response.text().await.unwrap();
    assert!(svg.contains("inuse_space"), "{svg}");
    assert!(svg.contains("heap_ballast"), "{svg}");
    drop(ballast);
}

#[tokio::test]
async fn cpu_flamegraph_of_an_idle_service_is_still_svg() {
    let _profiler = CPU_PROFILER.lock().await;
    let app = memory_app().await;

    let response = get(app.admin_url("/debug/pprof/profile?seconds=1&format=flamegraph")).await;

    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("<svg"));
}

#[tokio::test]
async fn task_dump_of_a_runtime_that_lists_no_tasks_is_501() {
    let app = memory_app().await;

    let response = get(app.admin_url("/debug/pprof/tasks")).await;

    assert_eq!(response.status(), 501);
    let message = response.text().await.unwrap();
    assert!(message.contains("TaskList::record"), "{message}");
}

#[tokio::test]
async fn index_links_every_profile() {
    let app = memory_app().await;

    let response = get(app.admin_url("/debug/pprof/")).await;

    assert_eq!(response.status(), 200);
    let index = response.text().await.unwrap();
    for link in ["href=\"profile?", "href=\"heap\"", "href=\"tasks\""] {
        assert!(index.contains(link), "{link} missing from {index}");
    }
}

#[tokio::test]
async fn admin_token_guards_debug_routes_but_not_health() {
    let app = TestApp::builder()
        .args(&["--admin-token", "secret"])
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let heap = app.admin_url("/debug/pprof/heap");
    let send = |request: reqwest::RequestBuilder| async move {
        request.send().await.expect("admin answers").status()
    };

    assert_eq!(send(client.get(&heap)).await, 401);
    assert_eq!(send(client.get(&heap).bearer_auth("wrong")).await, 401);
    assert_eq!(send(client.get(&heap).bearer_auth("secret")).await, 200);
    assert_eq!(
        send(client.get(app.admin_url("/debug/pprof/tasks"))).await,
        401
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(send(client.get(app.admin_url(path))).await, 200, "{path}");
    }
}

/// The string labels of each sample: (key, value) pairs.
fn sample_labels(profile: &Profile) -> Vec<Vec<(&str, &str)>> {
    let string = |index: i64| profile.string_table[index as usize].as_str();
    profile
        .sample
        .iter()
        .map(|sample| {
            sample
                .label
                .iter()
                .filter(|label| label.str != 0)
                .map(|label| (string(label.key), string(label.str)))
                .collect()
        })
        .collect()
}

fn label<'a>(labels: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| *value)
}

/// An app whose SearchProducts calls each burn 5 ms of CPU: samples in
/// them are all but certain.
async fn app_burning_cpu_in_search(extra: &[&str]) -> TestApp {
    let app = TestApp::builder()
        .args(&[&["--enable-faults"], extra].concat())
        .spawn()
        .await;
    let (status, body) = app
        .put_faults(r#"{"cpu_burn_ms": 5, "methods": ["SearchProducts"]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    app
}

fn search_request() -> SearchRequest {
    SearchRequest {
        query: "oak".into(),
        page_size: 20,
        ..Default::default()
    }
}

/// Calls SearchProducts, and nothing else, until aborted; `traceparent`
/// goes on every call if given.
fn drive_searches(
    mut client: CatalogueServiceClient<tonic::transport::Channel>,
    traceparent: Option<&'static str>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut request = tonic::Request::new(search_request());
            if let Some(traceparent) = traceparent {
                request
                    .metadata_mut()
                    .insert("traceparent", traceparent.parse().unwrap());
            }
            client
                .search_products(request)
                .await
                .expect("SearchProducts answers");
        }
    })
}

#[tokio::test]
async fn a_profile_of_searches_only_labels_its_samples_search_products_and_none_get_product() {
    let _profiler = CPU_PROFILER.lock().await;
    let app = app_burning_cpu_in_search(&[]).await;
    let searches = drive_searches(app.client.clone(), None);

    let response = get(app.admin_url("/debug/pprof/profile?seconds=2&frequency=500")).await;
    searches.abort();

    assert_eq!(response.status(), 200);
    let profile = pprof_attachment(response, "profile").await;
    let labels = sample_labels(&profile);
    let methods: Vec<&str> = labels
        .iter()
        .filter_map(|labels| label(labels, "rpc_method"))
        .collect();
    assert!(
        methods.contains(&"SearchProducts"),
        "no sample labelled SearchProducts: {labels:?}"
    );
    assert!(
        !methods.contains(&"GetProduct"),
        "a GetProduct sample in a load of searches: {labels:?}"
    );
    let services: Vec<&str> = labels
        .iter()
        .filter(|labels| label(labels, "rpc_method") == Some("SearchProducts"))
        .filter_map(|labels| label(labels, "rpc_service"))
        .collect();
    assert!(
        services
            .iter()
            .all(|service| *service == "catalogue.v1.CatalogueService"),
        "{services:?}"
    );
    assert!(
        labels
            .iter()
            .any(|labels| label(labels, "rpc_method").is_none()),
        "samples outside any call carry no method"
    );
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_samples_of_a_traced_call_carry_its_trace_and_span_ids() {
    let _profiler = CPU_PROFILER.lock().await;
    // Nothing listens there: spans are made and their export fails, which
    // is all labels need.
    let app = app_burning_cpu_in_search(&["--otlp-endpoint", "http://127.0.0.1:9"]).await;
    let searches = drive_searches(app.client.clone(), Some(TRACEPARENT));

    let response = get(app.admin_url("/debug/pprof/profile?seconds=2&frequency=500")).await;
    searches.abort();

    assert_eq!(response.status(), 200);
    let profile = pprof_attachment(response, "profile").await;
    let labels = sample_labels(&profile);
    let traced: Vec<_> = labels
        .iter()
        .filter(|labels| label(labels, "trace_id") == Some(TRACE_ID))
        .collect();
    assert!(
        !traced.is_empty(),
        "no sample of trace {TRACE_ID}: {labels:?}"
    );
    for labels in &traced {
        assert_eq!(label(labels, "rpc_method"), Some("SearchProducts"));
        let span_id = label(labels, "span_id").expect("a span id");
        assert_eq!(span_id.len(), 16, "{span_id}");
        assert_ne!(
            span_id, "00f067aa0ba902b7",
            "the server span's, not the caller's"
        );
    }
}

#[tokio::test]
async fn a_flame_graph_for_one_method_holds_only_its_calls() {
    let _profiler = CPU_PROFILER.lock().await;
    let app = app_burning_cpu_in_search(&[]).await;
    let traffic = drive_traffic(&app);

    let searches = get(app.admin_url(
        "/debug/pprof/profile?seconds=2&frequency=500&format=flamegraph&rpc_method=SearchProducts",
    ))
    .await;
    let gets = get(app.admin_url(
        "/debug/pprof/profile?seconds=2&frequency=500&format=flamegraph&rpc_method=GetProduct",
    ))
    .await;
    traffic.abort();

    assert_eq!(searches.status(), 200);
    let searches = searches.text().await.unwrap();
    assert!(searches.contains("burn_cpu"), "{searches}");
    assert!(!searches.contains("get_product"), "{searches}");
    assert_eq!(gets.status(), 200);
    let gets = gets.text().await.unwrap();
    assert!(!gets.contains("burn_cpu"), "{gets}");
}
