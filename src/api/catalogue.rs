//! `catalogue.v1.CatalogueService`.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::{Stream, StreamExt};
use tonic::{
    Code, Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};

use super::proto::{self, catalogue_service_server::CatalogueService};
use crate::{
    domain::{
        CategoryId, DEFAULT_LIST_PAGE_SIZE, DEFAULT_SEARCH_PAGE_SIZE, ListCursor, ListQuery,
        MAX_LIST_PAGE_SIZE, MAX_SEARCH_PAGE_SIZE, PageSize, Product, ProductId, SearchOffset,
        SearchQuery, SearchText,
    },
    error::Error,
    store::{self, Listed, Store},
    upstream::{Upstream, caller_deadline},
};

/// Response header of `GetProduct` when an inventory upstream is configured:
/// `live` (stock from the upstream) or `stale` (the stored stock, because the
/// upstream could not answer in time).
pub const STOCK_SOURCE_HEADER: &str = "x-stock-source";

/// Trailer of a `ListProducts` stream whose page is followed by more
/// products: the opaque token of the next page.
pub const NEXT_PAGE_TOKEN_TRAILER: &str = "x-next-page-token";

/// The service's handlers, over any store. Faults are not theirs to apply:
/// `faults::FaultLayer` wraps the whole service.
#[derive(Clone)]
pub struct CatalogueApi {
    store: Arc<dyn Store>,
    /// Live stock; `None` serves the stored stock.
    upstream: Option<Arc<Upstream>>,
}

impl CatalogueApi {
    pub fn new(store: Arc<dyn Store>, upstream: Option<Arc<Upstream>>) -> Self {
        Self { store, upstream }
    }

    async fn product(&self, request: &proto::GetProductRequest) -> Result<proto::Product, Error> {
        let id = ProductId::parse(&request.product_id)?;
        match self.store.get_product(&id).await? {
            Some(product) => Ok(product.into()),
            None => Err(Error::NotFound(id)),
        }
    }

    /// The product with its stock from `upstream`, or the stored stock
    /// (`x-stock-source: stale`) when the upstream cannot answer in time:
    /// the stored stock is a useful answer.
    async fn with_live_stock(
        &self,
        upstream: &Upstream,
        request: Request<proto::GetProductRequest>,
    ) -> Result<Response<proto::Product>, Status> {
        let deadline = caller_deadline(request.metadata(), Instant::now());
        let mut product = self.product(request.get_ref()).await?;
        let source = match upstream.stock(&product.id, deadline).await {
            Ok(stock) => {
                product.stock_qty = stock;
                "live"
            }
            Err(_) => "stale",
        };
        let mut response = Response::new(product);
        response
            .metadata_mut()
            .insert(STOCK_SOURCE_HEADER, MetadataValue::from_static(source));
        Ok(response)
    }

    async fn search(&self, request: &proto::SearchRequest) -> Result<proto::SearchResponse, Error> {
        let query = SearchQuery {
            text: SearchText::parse(&request.query)?,
            category: CategoryId::parse_optional(&request.category_id)?,
            offset: SearchOffset::decode(&request.page_token)?,
            page_size: PageSize::parse(
                request.page_size,
                DEFAULT_SEARCH_PAGE_SIZE,
                MAX_SEARCH_PAGE_SIZE,
            )?,
        };
        let page_size = query.page_size.get();
        // One row more than the page tells whether another page follows.
        let mut products = self.store.search_products(&query, page_size + 1).await?;
        let next_page_token = if products.len() > page_size as usize {
            products.truncate(page_size as usize);
            query
                .offset
                .next(query.page_size)
                .map(SearchOffset::encode)
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(proto::SearchResponse {
            products: products.into_iter().map(Into::into).collect(),
            next_page_token,
        })
    }
}

fn list_query(request: &proto::ListProductsRequest) -> Result<ListQuery, Error> {
    Ok(ListQuery {
        after: ListCursor::decode(&request.page_token)?.map(|cursor| cursor.0),
        category: CategoryId::parse_optional(&request.category_id)?,
        page_size: PageSize::parse(
            request.page_size,
            DEFAULT_LIST_PAGE_SIZE,
            MAX_LIST_PAGE_SIZE,
        )?,
    })
}

/// The end of a stream that has a next page: an OK status whose trailers
/// carry the token.
pub fn next_page_trailer(cursor: &ListCursor) -> Status {
    let mut trailers = MetadataMap::new();
    match cursor.encode().parse() {
        Ok(token) => {
            trailers.insert(NEXT_PAGE_TOKEN_TRAILER, token);
        }
        Err(error) => tracing::error!(%error, "page token is not valid metadata"),
    }
    Status::with_metadata(Code::Ok, "", trailers)
}

impl From<Product> for proto::Product {
    fn from(product: Product) -> Self {
        Self {
            id: product.id,
            name: product.name,
            description: product.description,
            price_eur: product.price_cents as f64 / 100.0,
            stock_qty: product.stock_qty,
            image_urls: product.image_urls,
            created_at: Some(prost_types::Timestamp {
                seconds: product.created_at,
                nanos: 0,
            }),
            category_id: product.category_id,
        }
    }
}

type ProductStream = Pin<Box<dyn Stream<Item = Result<proto::Product, Status>> + Send>>;

#[tonic::async_trait]
impl CatalogueService for CatalogueApi {
    async fn get_product(
        &self,
        request: Request<proto::GetProductRequest>,
    ) -> Result<Response<proto::Product>, Status> {
        match &self.upstream {
            None => Ok(Response::new(self.product(request.get_ref()).await?)),
            // Boxed: the upstream call's future is many times the size of
            // the rest, and every layer above would move it for every call.
            Some(upstream) => Box::pin(self.with_live_stock(upstream, request)).await,
        }
    }

    type ListProductsStream = ProductStream;

    async fn list_products(
        &self,
        request: Request<proto::ListProductsRequest>,
    ) -> Result<Response<Self::ListProductsStream>, Status> {
        let query = list_query(request.get_ref())?;
        let products = store::list_stream(self.store.clone(), query).map(|item| match item {
            Ok(Listed::Product(product)) => Ok(product.into()),
            Ok(Listed::NextPage(cursor)) => Err(next_page_trailer(&cursor)),
            Err(error) => Err(Error::from(error).into()),
        });
        Ok(Response::new(Box::pin(products)))
    }

    async fn search_products(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let response = self.search(request.get_ref()).await?;
        Ok(Response::new(response))
    }
}
