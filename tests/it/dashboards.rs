//! The dashboards and alert rules against a real scrape. Every query in
//! `grafana/dashboards/*.json` and `otel/rules/*.yml` is parsed with a PromQL
//! parser; each metric it selects must be one the service exports after real
//! traffic, and each label it matches on, groups by or prints in a legend
//! must be on the series at that point of the query. So no panel ships
//! showing "No data" because of a typo, a renamed metric or a label lost in
//! an aggregation (`histogram_quantile` without `le`, a legend naming a label
//! that `sum by` dropped, two sides of a division that cannot match).

use std::collections::{BTreeSet, HashMap, HashSet};

use catalogue::{api::proto::GetProductRequest, runtime::runtime_builder};
use prometheus_parse::{Scrape, Value};
use promql_parser::{
    label::{METRIC_NAME, MatchOp, Matcher},
    parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector, value::ValueType},
};
use serde_json::Value as Json;
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, read_yaml, repo_path, seed_products, upstream},
    metrics::{call_each_rpc, cancel_a_stream},
};

type Labels = BTreeSet<String>;

/// Labels Prometheus adds to every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Grafana's variables, replaced before parsing as Grafana replaces them.
/// `$job` and `$instance` become markers, so that a selector can be checked
/// for filtering on them.
const VARIABLES: [(&str, &str); 8] = [
    ("${job}", JOB_MARKER),
    ("${instance}", INSTANCE_MARKER),
    ("$job", JOB_MARKER),
    ("$instance", INSTANCE_MARKER),
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("$__range_s", "3600"),
];
const JOB_MARKER: &str = "JOB_VARIABLE";
const INSTANCE_MARKER: &str = "INSTANCE_VARIABLE";

/// Grafana unit ids the dashboards may use (a typo renders raw numbers).
const UNITS: &[&str] = &[
    "reqps",
    "ops",
    "percentunit",
    "s",
    "short",
    "bytes",
    "none",
    "dtdurations",
];

/// Panel types that show no data and so carry no unit.
const PANELS_WITHOUT_DATA: &[&str] = &["row", "text"];

#[test]
fn every_dashboard_and_rule_query_selects_exported_metrics_and_labels() {
    runtime_builder()
        .worker_threads(2)
        .build()
        .unwrap()
        .block_on(async {
            // Arrange: one of every kind of call, so every series exists;
            // an upstream that fails every call, so the breaker opens after
            // five (call_each_rpc makes seven GetProduct calls); a fault on
            // and one call shed.
            let upstream_url = upstream(0, 1.0).await;
            let max_calls = MAX_CONCURRENT_CALLS.to_string();
            let mut app = TestApp::builder()
                .backend(Backend::Sqlite)
                .args(&[
                    "--upstream-url",
                    &upstream_url,
                    "--breaker-min-requests",
                    "5",
                    "--max-concurrent-calls",
                    &max_calls,
                    "--max-calls-per-connection",
                    &max_calls,
                    "--enable-faults",
                ])
                .spawn()
                .await;
            call_each_rpc(&mut app).await;
            cancel_a_stream(&app).await;
            shed_a_call(&app).await;

            // Act
            let scrape = app.scrape().await;
            let exported = Exported::from_scrape(&scrape);
            let mut checker = Checker::new(&exported);
            let rule_queries = check_rule_files(&mut checker);
            let dashboard_queries = check_dashboards(&mut checker);

            // Assert
            assert!(
                checker.problems.is_empty(),
                "{} problems:\n{}",
                checker.problems.len(),
                checker.problems.join("\n")
            );
            assert!(rule_queries >= 10, "only {rule_queries} rule queries found");
            assert!(
                dashboard_queries >= 50,
                "only {dashboard_queries} dashboard queries found"
            );
        });
}

/// The test app's `--max-concurrent-calls`: low, so that one call is shed.
const MAX_CONCURRENT_CALLS: usize = 4;

/// Holds every call slot with GetProduct calls slowed by a latency fault,
/// so that one call more is shed; leaves the fault on.
async fn shed_a_call(app: &TestApp) {
    let (status, body) = app
        .put_faults(r#"{"latency_ms": 60000, "methods": ["GetProduct"]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    let product_id = seed_products()[0].id.clone();
    // One call more than the limit: one of them is refused at once while
    // the others wait out the fault.
    let calls = (0..=MAX_CONCURRENT_CALLS).map(|_| {
        let mut client = app.client.clone();
        let request = GetProductRequest {
            product_id: product_id.clone(),
        };
        tokio::spawn(async move { client.get_product(request).await })
    });
    let (first, _, slow) = futures::future::select_all(calls).await;
    let shed = first.expect("call task").expect_err("shed");
    assert_eq!(shed.code(), Code::Unavailable);
    for call in slow {
        call.abort();
    }
}

/// Checks every recording and alerting rule; records what each recording
/// rule produces, for the dashboards and alerts that select it. Returns the
/// number of queries checked.
fn check_rule_files(checker: &mut Checker) -> usize {
    let mut queries = 0;
    for path in files_in("otel/rules", "yml") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let rules = read_yaml(&path);
        for group in rules["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                let expr = rule["expr"].as_str().expect("expr");
                let rule_labels = rule["labels"]
                    .as_mapping()
                    .map(|labels| labels.keys().filter_map(|k| k.as_str()).map(String::from));
                if let Some(record) = rule["record"].as_str() {
                    checker.context = format!("{file}: {record}");
                    let mut labels = checker.check_query(expr, false);
                    labels.extend(rule_labels.into_iter().flatten());
                    checker.recorded.insert(record.to_owned(), labels);
                } else {
                    let alert = rule["alert"].as_str().expect("record or alert");
                    checker.context = format!("{file}: {alert}");
                    checker.check_query(expr, false);
                    if rule["labels"]["severity"].as_str().is_none() {
                        checker.problem("an alert needs a severity label".into());
                    }
                    if rule["annotations"]["summary"].as_str().is_none() {
                        checker.problem("an alert needs a summary annotation".into());
                    }
                }
                queries += 1;
            }
        }
    }
    queries
}

/// Checks every dashboard's variables, panels and queries. Returns the
/// number of queries checked.
fn check_dashboards(checker: &mut Checker) -> usize {
    let mut queries = 0;
    let mut uids = HashSet::new();
    for path in files_in("grafana/dashboards", "json") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Json =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
        let uid = dashboard["uid"].as_str().unwrap_or_default().to_owned();
        checker.context = file.clone();
        if uid.is_empty() || !uids.insert(uid.clone()) {
            checker.problem(format!("uid {uid:?} is missing or not unique"));
        }
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("templating");
        for name in TARGET_LABELS {
            if !variables.iter().any(|variable| variable["name"] == name) {
                checker.problem(format!("no ${name} variable"));
            }
        }
        for variable in variables {
            checker.context = format!("{file}: variable {}", variable["name"]);
            checker.check_variable(variable["definition"].as_str().unwrap_or_default());
        }
        let mut panels = Vec::new();
        collect_panels(&dashboard["panels"], &mut panels);
        let mut ids = HashSet::new();
        for panel in panels {
            checker.context = format!("{file}: {}", panel["title"]);
            if !ids.insert(panel["id"].as_u64()) {
                checker.problem(format!("panel id {} is not unique", panel["id"]));
            }
            queries += checker.check_panel(panel);
        }
    }
    queries
}

/// The dashboard's panels, rows' nested panels included.
fn collect_panels<'a>(panels: &'a Json, into: &mut Vec<&'a Json>) {
    for panel in panels.as_array().into_iter().flatten() {
        into.push(panel);
        collect_panels(&panel["panels"], into);
    }
}

/// The repository's files under `dir` ending in `.extension`, sorted.
fn files_in(dir: &str, extension: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo_path(dir))
        .unwrap_or_else(|error| panic!("{dir}: {error}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .{extension} file in {dir}");
    files
}

/// What the service exports: each metric's labels and the values seen for
/// each label.
struct Exported {
    metrics: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl Exported {
    /// Histograms are exported as `_bucket` (with `le`), `_sum` and `_count`.
    fn from_scrape(scrape: &Scrape) -> Self {
        let mut metrics: HashMap<String, HashMap<String, HashSet<String>>> = HashMap::new();
        for sample in &scrape.samples {
            let mut add = |name: String, extra: Option<(&str, String)>| {
                let labels = metrics.entry(name).or_default();
                for (label, value) in sample.labels.iter() {
                    labels
                        .entry(label.clone())
                        .or_default()
                        .insert(value.clone());
                }
                if let Some((label, value)) = extra {
                    labels.entry(label.into()).or_default().insert(value);
                }
            };
            match &sample.value {
                Value::Histogram(buckets) => {
                    for bucket in buckets {
                        add(
                            format!("{}_bucket", sample.metric),
                            Some(("le", bucket.less_than.to_string())),
                        );
                    }
                    add(format!("{}_sum", sample.metric), None);
                    add(format!("{}_count", sample.metric), None);
                }
                _ => add(sample.metric.clone(), None),
            }
        }
        Self { metrics }
    }
}

/// Walks queries, collecting what is wrong with them.
struct Checker<'a> {
    exported: &'a Exported,
    /// Recording rules' names and the labels of the series they record.
    recorded: HashMap<String, Labels>,
    /// Where the query being checked comes from, for the messages.
    context: String,
    problems: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(exported: &'a Exported) -> Self {
        Self {
            exported,
            recorded: HashMap::new(),
            context: String::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, message: String) {
        self.problems.push(format!("{}: {message}", self.context));
    }

    /// Checks one panel; returns the number of queries it holds.
    fn check_panel(&mut self, panel: &Json) -> usize {
        let kind = panel["type"].as_str().unwrap_or_default();
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if PANELS_WITHOUT_DATA.contains(&kind) {
            if !targets.is_empty() {
                self.problem(format!("a {kind} panel has queries"));
            }
            return 0;
        }
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
        if !unit.is_some_and(|unit| UNITS.contains(&unit)) {
            self.problem(format!("unit {unit:?} is not one of {UNITS:?}"));
        }
        if targets.is_empty() {
            self.problem("a panel without queries".into());
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            let labels = self.check_query(expr, true);
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for label in legend_labels(legend) {
                if !labels.contains(&label) {
                    self.problem(format!(
                        "legend {legend:?} prints {label:?}, which {expr} does not carry \
                         (it has {labels:?})"
                    ));
                }
            }
            let latency = expr.contains("histogram_quantile") && expr.contains("_seconds_bucket");
            if latency && target["exemplar"] != true {
                self.problem("a latency query without exemplars".into());
            }
        }
        targets.len()
    }

    /// Checks a `label_values(selector, label)` variable query.
    fn check_variable(&mut self, definition: &str) {
        let Some(arguments) = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
        else {
            self.problem(format!(
                "{definition:?} is not label_values(selector, label)"
            ));
            return;
        };
        let (selector, label) = arguments.rsplit_once(',').expect("two arguments");
        let labels = self.check_query(selector, false);
        if !labels.contains(label.trim()) {
            self.problem(format!("{selector} has no label {label}"));
        }
    }

    /// Parses a query after substituting Grafana's variables and checks it;
    /// returns the labels of its result. `dashboard` queries must filter
    /// every selector on `$job` and `$instance`.
    fn check_query(&mut self, query: &str, dashboard: bool) -> Labels {
        let mut expanded = query.to_owned();
        for (variable, replacement) in VARIABLES {
            expanded = expanded.replace(variable, replacement);
        }
        if expanded.contains('$') {
            self.problem(format!("{query} uses an unknown variable"));
            return Labels::new();
        }
        match parser::parse(&expanded) {
            Ok(expr) => self.labels_of(&expr, dashboard),
            Err(error) => {
                self.problem(format!("{query} does not parse: {error}"));
                Labels::new()
            }
        }
    }

    /// The labels `expr`'s series carry, checking every selector, grouping
    /// and vector match on the way.
    fn labels_of(&mut self, expr: &Expr, dashboard: bool) -> Labels {
        match expr {
            Expr::VectorSelector(selector) => self.selector(selector, dashboard),
            Expr::MatrixSelector(matrix) => self.selector(&matrix.vs, dashboard),
            Expr::Paren(paren) => self.labels_of(&paren.expr, dashboard),
            Expr::Unary(unary) => self.labels_of(&unary.expr, dashboard),
            Expr::Subquery(subquery) => self.labels_of(&subquery.expr, dashboard),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Labels::new(),
            Expr::Aggregate(aggregate) => {
                let inner = self.labels_of(&aggregate.expr, dashboard);
                if let Some(param) = &aggregate.param {
                    self.labels_of(param, dashboard);
                }
                match &aggregate.modifier {
                    Some(LabelModifier::Include(by)) => {
                        self.require(&inner, &by.labels, "by");
                        by.labels.iter().cloned().collect()
                    }
                    Some(LabelModifier::Exclude(without)) => {
                        self.require(&inner, &without.labels, "without");
                        inner
                            .into_iter()
                            .filter(|label| !without.labels.contains(label))
                            .collect()
                    }
                    None => match aggregate.op.to_string().as_str() {
                        "topk" | "bottomk" | "limitk" | "limit_ratio" => inner,
                        _ => Labels::new(),
                    },
                }
            }
            Expr::Binary(binary) => {
                let lhs = self.labels_of(&binary.lhs, dashboard);
                let rhs = self.labels_of(&binary.rhs, dashboard);
                if binary.lhs.value_type() == ValueType::Scalar {
                    return rhs;
                }
                if binary.rhs.value_type() == ValueType::Scalar {
                    return lhs;
                }
                self.vector_match(binary, lhs, rhs)
            }
            Expr::Call(call) => {
                let arguments: Vec<Labels> = call
                    .args
                    .args
                    .iter()
                    .map(|argument| self.labels_of(argument, dashboard))
                    .collect();
                let vectors: Labels = call
                    .args
                    .args
                    .iter()
                    .zip(&arguments)
                    .filter(|(argument, _)| {
                        matches!(argument.value_type(), ValueType::Vector | ValueType::Matrix)
                    })
                    .flat_map(|(_, labels)| labels.iter().cloned())
                    .collect();
                match call.func.name {
                    "histogram_quantile" => {
                        if !vectors.contains("le") {
                            self.problem(format!(
                                "histogram_quantile over series without le (they have {vectors:?})"
                            ));
                        }
                        vectors.into_iter().filter(|label| label != "le").collect()
                    }
                    "absent" | "absent_over_time" | "time" | "vector" => Labels::new(),
                    _ => vectors,
                }
            }
        }
    }

    /// The labels of a binary operation between two vectors: the series of
    /// each side must be able to match.
    fn vector_match(&mut self, binary: &parser::BinaryExpr, lhs: Labels, rhs: Labels) -> Labels {
        let set_operator = binary.op.is_set_operator();
        let modifier = binary.modifier.as_ref();
        let matching = modifier.and_then(|modifier| modifier.matching.as_ref());
        if let Some(matching) = matching {
            let labels = &matching.labels().labels;
            self.require(&lhs, labels, "on/ignoring (left)");
            self.require(&rhs, labels, "on/ignoring (right)");
        }
        match modifier.map(|modifier| &modifier.card) {
            Some(VectorMatchCardinality::ManyToOne(include)) => {
                self.require(&rhs, &include.labels, "group_left");
                lhs.into_iter()
                    .chain(include.labels.iter().cloned())
                    .collect()
            }
            Some(VectorMatchCardinality::OneToMany(include)) => {
                self.require(&lhs, &include.labels, "group_right");
                rhs.into_iter()
                    .chain(include.labels.iter().cloned())
                    .collect()
            }
            _ if set_operator => {
                if binary.op.to_string() == "or" {
                    lhs.union(&rhs).cloned().collect()
                } else {
                    lhs
                }
            }
            _ => {
                let compared = |side: &Labels| -> Labels {
                    match matching {
                        Some(LabelModifier::Include(on)) => on.labels.iter().cloned().collect(),
                        Some(LabelModifier::Exclude(ignoring)) => side
                            .iter()
                            .filter(|label| !ignoring.labels.contains(label))
                            .cloned()
                            .collect(),
                        None => side.clone(),
                    }
                };
                let (left, right) = (compared(&lhs), compared(&rhs));
                if left != right {
                    self.problem(format!(
                        "the sides of {} match on different labels, {left:?} and {right:?}: \
                         no series would pair up",
                        binary.op
                    ));
                }
                left
            }
        }
    }

    fn require(&mut self, available: &Labels, wanted: &[String], clause: &str) {
        for label in wanted {
            if !available.contains(label) {
                self.problem(format!(
                    "{clause} names {label:?}, which the series do not carry (they have \
                     {available:?})"
                ));
            }
        }
    }

    /// Checks a selector's metric and matchers; returns its series' labels.
    fn selector(&mut self, selector: &VectorSelector, dashboard: bool) -> Labels {
        let matchers: Vec<&Matcher> = selector
            .matchers
            .matchers
            .iter()
            .chain(selector.matchers.or_matchers.iter().flatten())
            .collect();
        let name = selector.name.clone().or_else(|| {
            matchers
                .iter()
                .find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal)
                .map(|m| m.value.clone())
        });
        let Some(name) = name else {
            self.problem(format!("{selector} selects no metric by name"));
            return Labels::new();
        };
        if dashboard {
            for (label, marker) in [("job", JOB_MARKER), ("instance", INSTANCE_MARKER)] {
                let filtered = matchers.iter().any(|m| {
                    m.name == label && matches!(m.op, MatchOp::Re(_)) && m.value == marker
                });
                if !filtered {
                    self.problem(format!(
                        "{selector} does not filter on {label}=~\"${label}\""
                    ));
                }
            }
        }
        let exported = self.exported.metrics.get(&name);
        let labels: Labels = match (exported, self.recorded.get(&name)) {
            (Some(exported), _) => exported
                .keys()
                .cloned()
                .chain(TARGET_LABELS.map(String::from))
                .collect(),
            (None, Some(recorded)) => recorded.clone(),
            // The Go runtime's metrics (go_sched_latencies_seconds, ...):
            // exported by the grpc-go peer (go-peer/) for the Go
            // panels of go-and-tokio.json, not by the service. They are
            // proved against a Go process by scripts/check-dashboards.sh.
            (None, None) if name.starts_with(GO_RUNTIME_PREFIX) => go_runtime_labels(&name),
            (None, None) => {
                self.problem(format!(
                    "{name} is neither exported by the service nor recorded by a rule"
                ));
                return Labels::new();
            }
        };
        for matcher in matchers {
            if matcher.name == METRIC_NAME {
                continue;
            }
            if !labels.contains(&matcher.name) {
                self.problem(format!("{name} has no label {:?}", matcher.name));
                continue;
            }
            let seen = exported.and_then(|exported| exported.get(&matcher.name));
            if let (MatchOp::Equal, Some(seen)) = (&matcher.op, seen)
                && !seen
                    .iter()
                    .any(|value| same_value(&matcher.name, value, &matcher.value))
            {
                self.problem(format!(
                    "{name}{{{}=\"{}\"}} matches nothing: the service exports {seen:?}",
                    matcher.name, matcher.value
                ));
            }
        }
        labels
    }
}

/// The prefix of the Go runtime's metrics, which only the Go peer exports.
const GO_RUNTIME_PREFIX: &str = "go_";

/// The labels of a Go runtime metric: the target's, and `le` on a bucket.
fn go_runtime_labels(name: &str) -> Labels {
    let mut labels: Labels = TARGET_LABELS.map(String::from).into_iter().collect();
    if name.ends_with("_bucket") {
        labels.insert("le".into());
    }
    labels
}

/// `le` values compare as numbers (`0.05` is `5e-2`).
fn same_value(label: &str, exported: &str, wanted: &str) -> bool {
    if label == "le"
        && let (Ok(exported), Ok(wanted)) = (exported.parse::<f64>(), wanted.parse::<f64>())
    {
        return exported == wanted;
    }
    exported == wanted
}

/// The labels a Grafana legend prints: `{{grpc_method}} {{ grpc_code }}`.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}"))
        .map(|(label, _)| label.trim().to_owned())
        .collect()
}

/// The checker itself: it must fail on the mistakes it exists to catch.
mod checker {
    use super::*;

    const SCRAPE: &str = "\
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_method=\"GetProduct\",grpc_code=\"OK\"} 3
# TYPE grpc_server_handling_seconds histogram
grpc_server_handling_seconds_bucket{grpc_method=\"GetProduct\",le=\"0.05\"} 3
grpc_server_handling_seconds_bucket{grpc_method=\"GetProduct\",le=\"+Inf\"} 3
grpc_server_handling_seconds_sum{grpc_method=\"GetProduct\"} 0.01
grpc_server_handling_seconds_count{grpc_method=\"GetProduct\"} 3
";

    fn problems(query: &str) -> Vec<String> {
        let scrape = Scrape::parse(SCRAPE.lines().map(|line| Ok(line.to_owned()))).unwrap();
        let exported = Exported::from_scrape(&scrape);
        let mut checker = Checker::new(&exported);
        checker.check_query(query, true);
        checker.problems
    }

    const F: &str = r#"job=~"$job", instance=~"$instance""#;

    #[test]
    fn a_correct_query_passes() {
        let query = format!(
            "histogram_quantile(0.99, sum by (grpc_method, le) \
             (rate(grpc_server_handling_seconds_bucket{{{F}, le=\"0.05\"}}[$__rate_interval])))"
        );
        assert_eq!(problems(&query), Vec::<String>::new());
    }

    #[test]
    fn a_misspelt_metric_or_label_is_caught() {
        assert_eq!(problems(&format!("grpc_server_handled{{{F}}}")).len(), 1);
        assert_eq!(
            problems(&format!(
                "sum by (method) (grpc_server_handled_total{{{F}}})"
            ))
            .len(),
            1
        );
        assert_eq!(
            problems(&format!(
                "grpc_server_handled_total{{{F}, grpc_code=\"Ok\"}}"
            ))
            .len(),
            1
        );
    }

    #[test]
    fn a_lost_le_a_mismatched_division_and_a_missing_filter_are_caught() {
        let lost_le = format!(
            "histogram_quantile(0.99, sum by (grpc_method) \
             (rate(grpc_server_handling_seconds_bucket{{{F}}}[1m])))"
        );
        assert_eq!(problems(&lost_le).len(), 1);
        let mismatched = format!(
            "sum by (grpc_method, grpc_code) (grpc_server_handled_total{{{F}}}) \
             / sum by (grpc_method) (grpc_server_handled_total{{{F}}})"
        );
        assert_eq!(problems(&mismatched).len(), 1);
        assert_eq!(problems("grpc_server_handled_total").len(), 2);
    }
}
