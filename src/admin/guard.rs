//! Who may call the admin routes. One middleware in front of every route,
//! so a route added later is guarded unless it is listed in
//! [`OPEN_ROUTES`]:
//!
//! - with `--admin-token`, every route but the open ones needs
//!   `Authorization: Bearer TOKEN` (401 otherwise), compared in constant
//!   time;
//! - without one, a request whose `Host` is neither `localhost` nor an IP
//!   address the admin server listens on is refused (403): a web page the
//!   operator visits could otherwise reach a loopback admin port through
//!   DNS rebinding (a name of the attacker's that resolves to 127.0.0.1),
//!   and an IP literal or `localhost` cannot be rebound;
//! - with a token or without, a request a browser made for another site's
//!   page (`Sec-Fetch-Site` other than `same-origin` or `none`, or an
//!   `Origin` that is not `http://` + the `Host` it was sent to) is refused
//!   (403) on every guarded route: a page cannot change the log filter,
//!   the faults or tokio-console, nor start a profile. A request with
//!   neither header (curl, a script) is no browser's.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The routes anyone who reaches the port may call, token or not: probes
/// and the scraper carry no secret, and these reveal nothing that needs
/// one (the live view's page holds no data: its feed is guarded). Every
/// other route, present or future, is guarded.
pub(crate) const OPEN_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/debug/live"];

/// What the guard checks a request against.
#[derive(Debug, Clone)]
pub struct AdminGuard {
    token: Option<AdminToken>,
    /// The address the admin server is bound to: without a token, the only
    /// IP a request's `Host` may name (any IP when bound to every interface).
    listening: SocketAddr,
}

impl AdminGuard {
    pub fn new(token: Option<AdminToken>, listening: SocketAddr) -> Arc<Self> {
        Arc::new(Self { token, listening })
    }

    /// `localhost`, or an IP literal this server listens on. The port is not
    /// compared: a published port (Docker's `6061:6060`) differs from the
    /// bound one, and rebinding needs a name, not a port.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
        else {
            return false;
        };
        let name = match host.strip_prefix('[') {
            // [::1]:6060
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        };
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        name.parse::<IpAddr>()
            .is_ok_and(|ip| self.listening.ip().is_unspecified() || ip == self.listening.ip())
    }
}

/// Lets a request through the rules in the module docs.
pub async fn guard(State(guard): State<Arc<AdminGuard>>, request: Request, next: Next) -> Response {
    let open = OPEN_ROUTES.contains(&request.uri().path());
    if !open && let Some(why) = cross_site(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "refused: a cross-site request ({why}); the admin routes answer only \
                 requests from their own origin or from no web page at all\n"
            ),
        )
            .into_response();
    }
    match &guard.token {
        None if !guard.host_allowed(request.headers()) => (
            StatusCode::FORBIDDEN,
            "refused: the Host header names neither localhost nor an address this admin \
             server listens on (DNS rebinding); call it by IP or localhost, or set \
             --admin-token\n",
        )
            .into_response(),
        Some(token)
            if !open
                && !bearer(request.headers()).is_some_and(|presented| token.matches(presented)) =>
        {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token: send Authorization: Bearer <--admin-token>\n",
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}

/// Why a browser sent this request for another site's page, if it did.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap_or("(not text)"))
    };
    if let Some(site) = text(SEC_FETCH_SITE)
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    let origin = text(header::ORIGIN.as_str())?;
    let host = text(header::HOST.as_str()).unwrap_or_default();
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
    (!own).then(|| format!("Origin {origin} is not this server's, http://{host}"))
}

/// Set by browsers on every request: how the page that made it relates to
/// the request's target.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// The secret the guarded admin routes require as `Authorization: Bearer …`.
/// Its `Debug` output is redacted, so logging the configuration is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Refuses an empty token, which would protect nothing.
    pub fn parse(token: &str) -> Result<Self, String> {
        if token.is_empty() {
            return Err("the admin token must not be empty".into());
        }
        Ok(Self(token.to_owned()))
    }

    /// Compares in time independent of the token: every presented byte is
    /// compared (with the token's bytes, cycled), whatever the lengths, so
    /// the time taken depends on the presented length alone, never on
    /// where the first difference is or whether the lengths differ.
    fn matches(&self, presented: &str) -> bool {
        let (expected, presented) = (self.0.as_bytes(), presented.as_bytes());
        // Never empty: `parse` refuses an empty token.
        let mut difference = expected.len() ^ presented.len();
        for (index, byte) in presented.iter().enumerate() {
            difference |= usize::from(byte ^ expected[index % expected.len()]);
        }
        difference == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AdminToken(<redacted>)")
    }
}

/// The credentials of an `Authorization: Bearer …` header (the scheme is
/// case-insensitive, RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let token = AdminToken::parse("secret").unwrap();
        assert!(token.matches("secret"));
        assert!(!token.matches("secreT"));
        assert!(!token.matches("secret2"));
        assert!(!token.matches("secretsecret"), "a repeat of it is not it");
        assert!(!token.matches("secre"));
        assert!(!token.matches(""));
        assert!(AdminToken::parse("").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn only_same_origin_requests_and_requests_from_no_page_pass() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, "127.0.0.1:6060".parse().unwrap());
            for (name, value) in pairs {
                headers.insert(*name, value.parse().unwrap());
            }
            headers
        };
        for allowed in [
            &[][..],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[("origin", "http://127.0.0.1:6060")],
        ] {
            assert_eq!(cross_site(&headers(allowed)), None, "{allowed:?}");
        }
        for refused in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")],
            &[("origin", "http://evil.example")],
            &[("origin", "null")],
            &[("origin", "http://127.0.0.1:6061")],
        ] {
            assert!(cross_site(&headers(refused)).is_some(), "{refused:?}");
        }
    }

    #[test]
    fn bearer_credentials_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    fn allowed(listening: &str, host: Option<&str>) -> bool {
        let guard = AdminGuard::new(None, listening.parse().unwrap());
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        guard.host_allowed(&headers)
    }

    #[test]
    fn without_a_token_only_localhost_and_the_listening_ip_are_hosts() {
        for host in ["localhost", "LOCALHOST:6060", "127.0.0.1:6060", "127.0.0.1"] {
            assert!(allowed("127.0.0.1:6060", Some(host)), "{host}");
        }
        for host in [
            "evil.example:6060",
            "127.0.0.2:6060",
            "[::1]:6060",
            "localhost.evil.example",
        ] {
            assert!(!allowed("127.0.0.1:6060", Some(host)), "{host}");
        }
        assert!(!allowed("127.0.0.1:6060", None));
        assert!(allowed("[::1]:6060", Some("[::1]:6060")));
        assert!(allowed("0.0.0.0:6060", Some("10.1.2.3:6060")));
        assert!(!allowed("0.0.0.0:6060", Some("catalogue:6060")));
    }
}
