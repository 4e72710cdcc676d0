//! The service's RPCs as one type. api, faults, telemetry, protection and
//! load all name a call by its `Method`, never by a string of their own, so
//! a method cannot be spelt one way in one module and another way in the
//! next; the names come from one match each.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A gRPC method's kind, as go-grpc-prometheus labels it (`grpc_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl Kind {
    /// The `grpc_type` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }

    /// Whether the server answers with a stream of messages.
    pub(crate) fn streams_responses(self) -> bool {
        matches!(self, Self::ServerStream | Self::BidiStream)
    }
}

/// An RPC of `catalogue.v1.CatalogueService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Method {
    GetProduct,
    ListProducts,
    SearchProducts,
}

impl Method {
    /// The fully qualified service (the proto's package and service).
    pub const SERVICE: &'static str = "catalogue.v1.CatalogueService";
    pub const ALL: [Self; 3] = [Self::GetProduct, Self::ListProducts, Self::SearchProducts];

    /// The short name, as in the proto: `GetProduct`.
    pub fn name(self) -> &'static str {
        match self {
            Self::GetProduct => "GetProduct",
            Self::ListProducts => "ListProducts",
            Self::SearchProducts => "SearchProducts",
        }
    }

    /// The HTTP/2 path of a call: `/catalogue.v1.CatalogueService/GetProduct`.
    pub fn path(self) -> &'static str {
        match self {
            Self::GetProduct => "/catalogue.v1.CatalogueService/GetProduct",
            Self::ListProducts => "/catalogue.v1.CatalogueService/ListProducts",
            Self::SearchProducts => "/catalogue.v1.CatalogueService/SearchProducts",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Self::GetProduct | Self::SearchProducts => Kind::Unary,
            Self::ListProducts => Kind::ServerStream,
        }
    }

    /// The method a request path calls; `None` for any other service's.
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|method| method.path() == path)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the service's methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown method {0:?}: expected GetProduct, ListProducts or SearchProducts")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|method| method.name() == name)
            .ok_or_else(|| UnknownMethod(name.to_owned()))
    }
}

impl TryFrom<String> for Method {
    type Error = UnknownMethod;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Method> for &'static str {
    fn from(method: Method) -> Self {
        method.name()
    }
}

/// A method the server serves, as the call layer and the traces record it
/// (health and reflection too). The app hands the layer its table; calls to any other path are counted under `unknown`, so
/// that random paths cannot create unbounded series.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    pub service: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    /// Whether sampled calls get a span: false for probes and tooling, which
    /// would drown real traffic.
    pub traced: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_parsing_agree() {
        for method in Method::ALL {
            assert_eq!(
                method.path(),
                format!("/{}/{}", Method::SERVICE, method.name())
            );
            assert_eq!(Method::from_path(method.path()), Some(method));
            assert_eq!(method.name().parse(), Ok(method));
        }
        assert_eq!(Method::from_path("/grpc.health.v1.Health/Check"), None);
        assert!("getproduct".parse::<Method>().is_err());
    }

    #[test]
    fn serialises_as_its_name() {
        let json = serde_json::to_string(&[Method::ListProducts]).unwrap();
        assert_eq!(json, r#"["ListProducts"]"#);
        let refused = serde_json::from_str::<Vec<Method>>(r#"["Delete"]"#).unwrap_err();
        assert!(refused.to_string().contains("unknown method"), "{refused}");
    }
}
