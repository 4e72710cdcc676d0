//! Profiles on demand, after Go's `net/http/pprof`: the routes. What a
//! profile is and how it is taken is `profiling`'s.
//!
//! Routes (behind `--admin-token` when one is set):
//! - `GET /debug/pprof/`: an index of what follows;
//! - `GET /debug/pprof/profile?seconds=30&frequency=99`: a CPU profile
//!   sampled for `seconds` (1–300) at `frequency` Hz (1–1000), as gzipped
//!   pprof protobuf; `&format=flamegraph` answers an SVG flame graph; the
//!   `x-profile-coverage` header is the share of the process's CPU time
//!   over the window its samples account for; each sample taken in a call
//!   is labelled `rpc_service`, `rpc_method` and, for a traced call,
//!   `trace_id` and `span_id` (`profiling::labels`);
//!   `&rpc_method=SearchProducts` keeps only that method's samples; one at
//!   a time (409 while another runs);
//! - `GET /debug/pprof/heap`: live allocations sampled by jemalloc, as gzipped
//!   pprof protobuf or (`&format=flamegraph`) SVG; 501 when jemalloc
//!   profiling is off;
//! - `GET /debug/pprof/tasks`: every live Tokio task of the runtime, with
//!   its name (if it has one), spawn location and age, as text; 501 when
//!   the runtime does not list its tasks (see `runtime::tasks`).
//!
//! Built without the `profiling` feature, `profile` and `heap` answer 501
//! naming the feature; `tasks` needs no profiler and stays.

use std::collections::HashMap;

use axum::{
    Router,
    extract::{Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};

use super::AdminState;
use crate::runtime::tasks::LiveTask;

/// The `/debug/pprof` routes.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route(
            "/debug/pprof",
            get(|| async { Redirect::permanent("/debug/pprof/") }),
        )
        .route("/debug/pprof/", get(|| async { Html(INDEX) }))
        .route("/debug/pprof/profile", get(profiles::cpu_profile))
        .route("/debug/pprof/heap", get(profiles::heap_profile))
        .route("/debug/pprof/tasks", get(task_dump))
}

const INDEX: &str = r#"<!DOCTYPE html>
<html><head><title>/debug/pprof/</title></head><body>
<h1>/debug/pprof/</h1>
<table>
<tr><td><a href="profile?seconds=30">profile</a></td><td>CPU profile: <code>?seconds=</code> (1&ndash;300, default 30), <code>&amp;frequency=</code> Hz (1&ndash;1000, default 99), <code>&amp;format=flamegraph</code> for SVG. One at a time.</td></tr>
<tr><td><a href="profile?seconds=10&amp;format=flamegraph">profile flame graph</a></td><td>10 s of CPU as an SVG flame graph; <code>&amp;rpc_method=SearchProducts</code> for one method's calls only.</td></tr>
<tr><td><a href="heap">heap</a></td><td>live allocations sampled by jemalloc (<code>&amp;format=flamegraph</code> for SVG).</td></tr>
<tr><td><a href="heap?format=flamegraph">heap flame graph</a></td><td>the same as an SVG flame graph.</td></tr>
<tr><td><a href="tasks">tasks</a></td><td>every live Tokio task with its name, spawn location and age, as text.</td></tr>
</table>
<p>Profiles are gzipped pprof protobuf: <code>go tool pprof -http=: URL</code>. Samples taken in a call carry the labels <code>rpc_method</code>, <code>rpc_service</code> and, for a traced call, <code>trace_id</code> and <code>span_id</code>: <code>go tool pprof -tags</code>, <code>-tagfocus rpc_method=SearchProducts</code>.</p>
</body></html>
"#;

/// Why a route did not answer with what was asked; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PprofError {
    /// Only the profiles' queries are parsed (the `profiling` feature).
    #[cfg_attr(not(feature = "profiling"), allow(dead_code))]
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[cfg(feature = "profiling")]
    #[error(transparent)]
    Profile(#[from] crate::profiling::ProfileError),
}

impl IntoResponse for PprofError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            #[cfg(feature = "profiling")]
            Self::Profile(error) => {
                use crate::profiling::ProfileError;
                match error {
                    ProfileError::Busy => StatusCode::CONFLICT,
                    ProfileError::HeapProfilingOff => StatusCode::NOT_IMPLEMENTED,
                    ProfileError::Cpu(_)
                    | ProfileError::Heap(_)
                    | ProfileError::Encode(_)
                    | ProfileError::Task(_) => {
                        tracing::error!(error = %self, "profile failed");
                        return (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "could not take the profile; the cause is in the service log\n",
                        )
                            .into_response();
                    }
                }
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// `profile` and `heap` in a build without a profiler.
#[cfg(not(feature = "profiling"))]
mod profiles {
    use super::PprofError;

    const NOT_BUILT: &str =
        "this build has no profiler: catalogue was built without the `profiling` feature";

    pub(super) async fn cpu_profile() -> PprofError {
        PprofError::Unsupported(NOT_BUILT)
    }

    pub(super) async fn heap_profile() -> PprofError {
        PprofError::Unsupported(NOT_BUILT)
    }
}

/// `profile` and `heap`: the query parsed, the profile taken by
/// `profiling`, the answer encoded.
#[cfg(feature = "profiling")]
mod profiles {
    use std::{ops::RangeInclusive, time::Duration};

    use axum::{
        extract::{Query, State},
        http::{HeaderMap, HeaderValue, header},
        response::{IntoResponse, Response},
    };
    use serde::Deserialize;

    use super::PprofError;
    use crate::{
        admin::AdminState,
        profiling::{
            self, ProfileFormat,
            cpu::{Coverage, CpuProfileRequest},
        },
    };

    const SECONDS: Bounded = Bounded {
        name: "seconds",
        default: 30,
        range: 1..=300,
    };
    const FREQUENCY: Bounded = Bounded {
        name: "frequency",
        default: 99,
        range: 1..=1000,
    };

    /// The header saying which share of the process's CPU time over the
    /// profile's window its samples account for (`0.973`); absent when the
    /// process's CPU time could not be read or was zero.
    pub(crate) const COVERAGE_HEADER: &str = "x-profile-coverage";
    /// The header with both numbers: `sampled=9.71s used=9.98s`.
    pub(crate) const CPU_SECONDS_HEADER: &str = "x-profile-cpu-seconds";

    /// The query string of the CPU profile route, before parsing. A
    /// parameter it does not name (`?secs=2`) is a 400 naming it.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct ProfileQuery {
        pub(super) seconds: Option<String>,
        pub(super) frequency: Option<String>,
        pub(super) format: Option<String>,
        pub(super) rpc_method: Option<String>,
    }

    /// The query string of the heap profile route.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct HeapQuery {
        format: Option<String>,
    }

    pub(super) async fn cpu_profile(
        State(state): State<AdminState>,
        Query(query): Query<ProfileQuery>,
    ) -> Result<Response, PprofError> {
        let request = parse_cpu_request(&query, &state.labels.method_names())?;
        let profile = profiling::cpu::profile(request, state.labels).await?;
        let mut response = respond(request.format, "profile", profile.body);
        annotate(&profile.coverage, response.headers_mut());
        Ok(response)
    }

    pub(super) async fn heap_profile(
        Query(query): Query<HeapQuery>,
    ) -> Result<Response, PprofError> {
        let format = parse_format(query.format.as_deref())?;
        let body = profiling::heap::profile(format).await?;
        Ok(respond(format, "heap", body))
    }

    /// `methods`: the names `rpc_method` may take.
    pub(super) fn parse_cpu_request(
        query: &ProfileQuery,
        methods: &[&'static str],
    ) -> Result<CpuProfileRequest, PprofError> {
        let seconds = SECONDS.parse(query.seconds.as_deref())?;
        let frequency = FREQUENCY.parse(query.frequency.as_deref())?;
        let rpc_method = query
            .rpc_method
            .as_deref()
            .map(|wanted| {
                methods
                    .iter()
                    .find(|name| **name == wanted)
                    .copied()
                    .ok_or_else(|| {
                        PprofError::BadRequest(format!(
                            "rpc_method must be one of {}, got {wanted:?}",
                            methods.join(", ")
                        ))
                    })
            })
            .transpose()?;
        Ok(CpuProfileRequest {
            duration: Duration::from_secs(seconds.into()),
            frequency: i32::try_from(frequency).expect("bounded by FREQUENCY"),
            format: parse_format(query.format.as_deref())?,
            rpc_method,
        })
    }

    pub(super) fn parse_format(format: Option<&str>) -> Result<ProfileFormat, PprofError> {
        match format {
            None | Some("pprof" | "proto") => Ok(ProfileFormat::Pprof),
            Some("flamegraph" | "svg") => Ok(ProfileFormat::Flamegraph),
            Some(other) => Err(PprofError::BadRequest(format!(
                "format must be pprof or flamegraph, got {other:?}"
            ))),
        }
    }

    /// The response: an attachment named `{name}.pb.gz`, or an SVG.
    fn respond(format: ProfileFormat, name: &str, body: Vec<u8>) -> Response {
        match format {
            ProfileFormat::Pprof => (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}.pb.gz\""),
                    ),
                ],
                body,
            )
                .into_response(),
            ProfileFormat::Flamegraph => {
                ([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response()
            }
        }
    }

    /// The coverage headers: both numbers, and their ratio when known.
    pub(super) fn annotate(coverage: &Coverage, headers: &mut HeaderMap) {
        let used = coverage
            .used_seconds
            .map_or_else(|| "unknown".to_owned(), |used| format!("{used:.2}s"));
        let both = format!("sampled={:.2}s used={used}", coverage.sampled_seconds);
        if let Ok(value) = HeaderValue::from_str(&both) {
            headers.insert(CPU_SECONDS_HEADER, value);
        }
        if let Some(ratio) = coverage.ratio()
            && let Ok(value) = HeaderValue::from_str(&format!("{ratio:.3}"))
        {
            headers.insert(COVERAGE_HEADER, value);
        }
    }

    /// A whole-number query parameter with a default and inclusive bounds.
    struct Bounded {
        name: &'static str,
        default: u32,
        range: RangeInclusive<u32>,
    }

    impl Bounded {
        fn parse(&self, value: Option<&str>) -> Result<u32, PprofError> {
            let Some(value) = value else {
                return Ok(self.default);
            };
            value
                .parse()
                .ok()
                .filter(|number| self.range.contains(number))
                .ok_or_else(|| {
                    PprofError::BadRequest(format!(
                        "{} must be a whole number from {} to {}, got {value:?}",
                        self.name,
                        self.range.start(),
                        self.range.end()
                    ))
                })
        }
    }
}

async fn task_dump(
    State(state): State<AdminState>,
    _: Query<super::NoQuery>,
) -> Result<String, PprofError> {
    let tasks = state.tasks.live().ok_or(PprofError::Unsupported(
        "the runtime was not built to list its tasks (TaskList::record)",
    ))?;
    Ok(render_tasks(&tasks))
}

/// The dump's text: how many tasks, how many were spawned where, then each
/// task, oldest first.
fn render_tasks(tasks: &[LiveTask]) -> String {
    use std::fmt::Write as _;
    let mut by_location: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        *by_location.entry(task.spawned_at.to_string()).or_default() += 1;
    }
    let mut by_location: Vec<_> = by_location.into_iter().collect();
    by_location.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut text = format!(
        "{} tasks (from the runtime's spawn and terminate hooks: where each task waits is not traced)\n\nby spawn location:\n",
        tasks.len()
    );
    for (location, count) in by_location {
        let _ = writeln!(text, "{count:>7}  {location}");
    }
    text.push('\n');
    for task in tasks {
        let name = task
            .name
            .map(|name| format!(" {name:?}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "task {}{name}: spawned at {}, {:.1?} ago",
            task.id, task.spawned_at, task.age
        );
    }
    text
}

#[cfg(all(test, feature = "profiling"))]
mod tests {
    use std::time::Duration;

    use super::profiles::*;
    use super::*;
    use crate::profiling::{
        ProfileFormat,
        cpu::{Coverage, CpuProfileRequest},
    };

    fn query(seconds: Option<&str>, frequency: Option<&str>, format: Option<&str>) -> ProfileQuery {
        ProfileQuery {
            seconds: seconds.map(Into::into),
            frequency: frequency.map(Into::into),
            format: format.map(Into::into),
            rpc_method: None,
        }
    }

    const METHODS: &[&str] = &["GetProduct", "SearchProducts"];

    #[test]
    fn cpu_profile_defaults_to_30_seconds_at_99_hz_in_pprof() {
        let request = parse_cpu_request(&ProfileQuery::default(), METHODS).unwrap();
        assert_eq!(
            request,
            CpuProfileRequest {
                duration: Duration::from_secs(30),
                frequency: 99,
                format: ProfileFormat::Pprof,
                rpc_method: None,
            }
        );
    }

    #[test]
    fn cpu_profile_parameters_are_bounded() {
        for (seconds, frequency) in [
            (Some("0"), None),
            (Some("301"), None),
            (Some("abc"), None),
            (Some("-1"), None),
            (None, Some("0")),
            (None, Some("1001")),
        ] {
            let error = parse_cpu_request(&query(seconds, frequency, None), METHODS).unwrap_err();
            assert!(matches!(error, PprofError::BadRequest(_)), "{error}");
        }
        let request = parse_cpu_request(
            &query(Some("300"), Some("1000"), Some("flamegraph")),
            METHODS,
        )
        .unwrap();
        assert_eq!(request.duration, Duration::from_secs(300));
        assert_eq!(request.frequency, 1000);
        assert_eq!(request.format, ProfileFormat::Flamegraph);
    }

    #[test]
    fn coverage_is_sampled_over_used_and_absent_without_used_time() {
        let coverage = Coverage {
            sampled_seconds: 9.5,
            used_seconds: Some(10.0),
        };
        let mut headers = axum::http::HeaderMap::new();
        annotate(&coverage, &mut headers);
        assert_eq!(headers[COVERAGE_HEADER], "0.950");
        assert_eq!(headers[CPU_SECONDS_HEADER], "sampled=9.50s used=10.00s");

        let idle = Coverage {
            sampled_seconds: 0.0,
            used_seconds: Some(0.0),
        };
        let mut headers = axum::http::HeaderMap::new();
        annotate(&idle, &mut headers);
        assert!(headers.get(COVERAGE_HEADER).is_none());
    }

    #[test]
    fn rpc_method_is_one_of_the_served_methods() {
        let wanted = ProfileQuery {
            rpc_method: Some("SearchProducts".into()),
            ..ProfileQuery::default()
        };
        let request = parse_cpu_request(&wanted, METHODS).unwrap();
        assert_eq!(request.rpc_method, Some("SearchProducts"));

        let unknown = ProfileQuery {
            rpc_method: Some("searchproducts".into()),
            ..ProfileQuery::default()
        };
        let error = parse_cpu_request(&unknown, METHODS).unwrap_err();
        assert_eq!(
            error.to_string(),
            "rpc_method must be one of GetProduct, SearchProducts, got \"searchproducts\""
        );
    }

    #[test]
    fn unknown_format_is_refused_by_name() {
        let error = parse_format(Some("pdf")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "format must be pprof or flamegraph, got \"pdf\""
        );
    }
}
