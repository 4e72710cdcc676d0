//! Arbitrary bytes as the three request messages, through the same parsing
//! the handlers do: nothing may panic, and every token that decodes must
//! encode back to itself.
#![no_main]

use catalogue::{
    api::proto::{GetProductRequest, ListProductsRequest, SearchRequest},
    domain::{
        CategoryId, ListCursor, MAX_LIST_PAGE_SIZE, MAX_SEARCH_PAGE_SIZE, PageSize, ProductId,
        SearchOffset, SearchText,
    },
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = GetProductRequest::decode(data) {
        if let Ok(id) = ProductId::parse(&request.product_id) {
            assert_eq!(id.as_str(), request.product_id);
        }
    }
    if let Ok(request) = ListProductsRequest::decode(data) {
        let _ = PageSize::parse(request.page_size, 50, MAX_LIST_PAGE_SIZE);
        let _ = CategoryId::parse_optional(&request.category_id);
        if let Ok(Some(cursor)) = ListCursor::decode(&request.page_token) {
            assert_eq!(ListCursor::decode(&cursor.encode()), Ok(Some(cursor)));
        }
    }
    if let Ok(request) = SearchRequest::decode(data) {
        let _ = PageSize::parse(request.page_size, 20, MAX_SEARCH_PAGE_SIZE);
        if let Ok(text) = SearchText::parse(&request.query) {
            assert!(text.words().iter().all(|word| !word.is_empty()));
        }
        if let Ok(offset) = SearchOffset::decode(&request.page_token) {
            assert_eq!(SearchOffset::decode(&offset.encode()), Ok(offset));
        }
    }
});
