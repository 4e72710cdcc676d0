//! The catalogue's calls handed straight to the catalogue service; every
//! other call (health, reflection, an unknown path) to tonic's router.
//!
//! tonic's `Routes` is an axum router: for each call it matches the path
//! against a `/{service}/{*rest}` pattern, collects the URL parameters and
//! inserts a `MatchedPath` extension, about 2,000 instructions of a
//! GetProduct's (callgrind, `scripts/ladder.py`). A gRPC path names its
//! service before the second `/`, so one comparison routes it.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::method::Method;

/// Puts `catalogue` in front of the router it wraps.
#[derive(Clone)]
pub(crate) struct CatalogueFirstLayer<C> {
    catalogue: C,
}

impl<C> CatalogueFirstLayer<C> {
    pub(crate) fn new(catalogue: C) -> Self {
        Self { catalogue }
    }
}

impl<C: Clone, R> Layer<R> for CatalogueFirstLayer<C> {
    type Service = CatalogueFirst<C, R>;

    fn layer(&self, routes: R) -> Self::Service {
        CatalogueFirst {
            catalogue: self.catalogue.clone(),
            routes,
        }
    }
}

#[derive(Clone)]
pub(crate) struct CatalogueFirst<C, R> {
    catalogue: C,
    routes: R,
}

/// Whether `path` is a method of the catalogue service.
fn is_catalogue(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|path| path.strip_prefix(Method::SERVICE))
        .is_some_and(|rest| rest.starts_with('/'))
}

impl<C, R, CB, RB, B> Service<Request<B>> for CatalogueFirst<C, R>
where
    C: Service<Request<B>, Response = Response<CB>, Error = Infallible>,
    R: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
{
    type Response = Response<http_body_util::Either<CB, RB>>;
    type Error = Infallible;
    type Future = RouteFuture<C::Future, R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both are tonic services, always ready; asked anyway.
        std::task::ready!(self.catalogue.poll_ready(cx))?;
        self.routes.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_catalogue(request.uri().path()) {
            RouteFuture::Catalogue {
                inner: self.catalogue.call(request),
            }
        } else {
            RouteFuture::Routes {
                inner: Box::pin(self.routes.call(request)),
            }
        }
    }
}

pin_project! {
    #[project = RouteFutureProjection]
    pub(crate) enum RouteFuture<C, R> {
        Catalogue { #[pin] inner: C },
        // Boxed: the router's future is 320 bytes, and the enum is as large
        // as its largest variant, which every layer above would move for
        // every catalogue call too.
        Routes { inner: Pin<Box<R>> },
    }
}

impl<C, R, CB, RB> Future for RouteFuture<C, R>
where
    C: Future<Output = Result<Response<CB>, Infallible>>,
    R: Future<Output = Result<Response<RB>, Infallible>>,
{
    type Output = Result<Response<http_body_util::Either<CB, RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteFutureProjection::Catalogue { inner } => inner
                .poll(cx)
                .map_ok(|response| response.map(http_body_util::Either::Left)),
            RouteFutureProjection::Routes { inner } => inner
                .as_mut()
                .poll(cx)
                .map_ok(|response| response.map(http_body_util::Either::Right)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_catalogue_services_methods_are_its_own() {
        assert!(is_catalogue("/catalogue.v1.CatalogueService/GetProduct"));
        assert!(is_catalogue("/catalogue.v1.CatalogueService/NoSuchMethod"));
        for path in [
            "/grpc.health.v1.Health/Check",
            "/catalogue.v1.CatalogueServiceX/GetProduct",
            "/catalogue.v1.CatalogueService",
            "catalogue.v1.CatalogueService/GetProduct",
            "/",
            "",
        ] {
            assert!(!is_catalogue(path), "{path}");
        }
    }
}
