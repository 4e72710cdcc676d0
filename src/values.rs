//! Values checked where they are parsed (a flag, a JSON field), so that no
//! sampler, fault or breaker ever sees a ratio of 1.5 and no client a URL
//! without a host: `Ratio`, `http_uri`, `positive_duration`, `grpc_timeout`.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A number in `0..=1`: from a flag (`FromStr`) or a JSON number (serde,
/// which refuses 1.5 as it would a string).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Ratio(f64);

/// A number outside `0..=1`, or not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a ratio: expected a number from 0 to 1")]
pub struct NotARatio(pub String);

impl Ratio {
    pub const ZERO: Self = Self(0.0);
    pub(crate) const ONE: Self = Self(1.0);

    pub fn new(value: f64) -> Result<Self, NotARatio> {
        if (0.0..=1.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(NotARatio(value.to_string()))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Ratio {
    type Error = NotARatio;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Ratio> for f64 {
    fn from(ratio: Ratio) -> Self {
        ratio.0
    }
}

impl FromStr for Ratio {
    type Err = NotARatio;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value = text
            .trim()
            .parse::<f64>()
            .map_err(|_| NotARatio(text.to_owned()))?;
        Self::new(value).map_err(|_| NotARatio(text.to_owned()))
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A JSON body as `T`, or what was wrong with it, naming the field
/// (`error_rate: 1.5 is not a ratio…`): the message a 400 carries.
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        match path.as_str() {
            "." => error.into_inner().to_string(),
            _ => format!("{path}: {}", error.into_inner()),
        }
    })?;
    json.end().map_err(|error| error.to_string())?;
    Ok(value)
}

/// A duration greater than zero (`humantime`'s syntax): for a timeout or
/// an interval, zero means "never" or "at once", which no one wants.
pub(crate) fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be greater than 0".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn http_uri(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "{text:?} is not an http:// or https:// URL with a host"
        )),
    }
}

/// The first value of `name` among `headers`, found by comparing names, not
/// by hashing one: a call's headers and trailers are a handful of fields,
/// and a hashed lookup costs more than comparing them all (about 170
/// instructions a lookup, callgrind; a call made several).
pub(crate) fn header<'a>(
    headers: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> Option<&'a http::HeaderValue> {
    headers
        .iter()
        .find_map(|(field, value)| (field == name).then_some(value))
}

/// Whether `headers` has a field named any of `names`: one pass over their
/// names, as in `header`.
pub(crate) fn has_any_header(headers: &http::HeaderMap, names: &[&http::HeaderName]) -> bool {
    headers.keys().any(|field| names.contains(&field))
}

/// The name of gRPC's deadline header.
pub(crate) static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// The `grpc-timeout` header of `headers`, if it has one that parses.
pub(crate) fn grpc_timeout_of(headers: &http::HeaderMap) -> Option<Duration> {
    grpc_timeout_value(header(headers, &GRPC_TIMEOUT)?)
}

/// A `grpc-timeout` header's value, if it parses.
pub(crate) fn grpc_timeout_value(value: &http::HeaderValue) -> Option<Duration> {
    grpc_timeout(value.to_str().ok()?)
}

/// A `grpc-timeout` header's value: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_its_first_value_found_among_the_others() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.append("x-seen", "first".parse().unwrap());
        headers.append("x-seen", "second".parse().unwrap());
        let name = |text| http::HeaderName::from_static(text);
        assert_eq!(header(&headers, &name("x-seen")).unwrap(), "first");
        assert_eq!(
            header(&headers, &http::header::CONTENT_TYPE).unwrap(),
            "application/grpc"
        );
        assert_eq!(header(&headers, &name("grpc-timeout")), None);
        headers.insert("grpc-timeout", "150m".parse().unwrap());
        assert_eq!(grpc_timeout_of(&headers), Some(Duration::from_millis(150)));
    }

    #[test]
    fn any_of_several_headers_is_found_in_one_pass() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        let traceparent = http::HeaderName::from_static("traceparent");
        let baggage = http::HeaderName::from_static("baggage");
        assert!(!has_any_header(&headers, &[&traceparent, &baggage]));
        headers.insert("baggage", "k=v".parse().unwrap());
        assert!(has_any_header(&headers, &[&traceparent, &baggage]));
        assert!(!has_any_header(&headers, &[&traceparent]));
    }

    #[test]
    fn urls_need_an_http_scheme_and_a_host() {
        assert!(http_uri("http://127.0.0.1:4317").is_ok());
        for bad in ["127.0.0.1:4317", "ftp://host", "http://", "not a url"] {
            assert!(http_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_zero_to_one_is_a_ratio() {
        assert_eq!("0.25".parse(), Ok(Ratio(0.25)));
        assert_eq!("1".parse(), Ok(Ratio::ONE));
        assert_eq!("0".parse(), Ok(Ratio::ZERO));
        for bad in ["1.5", "-0.1", "NaN", "half", ""] {
            assert!(bad.parse::<Ratio>().is_err(), "{bad}");
        }
    }
}
