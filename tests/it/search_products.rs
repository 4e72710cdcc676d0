use std::collections::HashSet;

use catalogue::{
    api::proto::{Product, SearchRequest},
    domain::{self, words},
};
use tonic::{Code, transport::Channel};

use catalogue::api::proto::catalogue_service_client::CatalogueServiceClient;

use crate::helpers::{Backend, TestApp, backend_tests, seed_products};

backend_tests!(
    pages_through_every_match_with_name_matches_first,
    every_word_must_match,
    category_filter_narrows_the_results,
    empty_query_is_invalid_argument,
    a_query_without_a_word_is_invalid_argument,
    out_of_range_page_size_and_malformed_token_are_invalid_argument,
    a_repeated_word_counts_once,
    more_than_16_distinct_words_is_invalid_argument,
);

fn contains_word(text: &str, word: &str) -> bool {
    words(text).iter().any(|candidate| candidate == word)
}

/// The seed products a query must find, by brute force.
fn expected_matches(query: &str, category: Option<&str>) -> HashSet<String> {
    let query_words = words(query);
    seed_products()
        .into_iter()
        .filter(|p| category.is_none_or(|category| p.category_id == category))
        .filter(|p| {
            query_words
                .iter()
                .all(|word| contains_word(&p.name, word) || contains_word(&p.description, word))
        })
        .map(|p| p.id)
        .collect()
}

/// Every page of a search, in order.
async fn search_all(
    client: &mut CatalogueServiceClient<Channel>,
    query: &str,
    category: &str,
) -> Vec<Product> {
    let mut results = Vec::new();
    let mut page_token = String::new();
    loop {
        let response = client
            .search_products(SearchRequest {
                query: query.into(),
                page_size: 20,
                page_token,
                category_id: category.into(),
            })
            .await
            .expect("search succeeds")
            .into_inner();
        assert!(response.products.len() <= 20);
        results.extend(response.products);
        if response.next_page_token.is_empty() {
            return results;
        }
        page_token = response.next_page_token;
    }
}

fn ids(products: &[Product]) -> HashSet<String> {
    products.iter().map(|p| p.id.clone()).collect()
}

async fn pages_through_every_match_with_name_matches_first(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let expected = expected_matches("rustic", None);
    assert!(expected.len() > 40, "the query spans several pages");

    let results = search_all(&mut app.client, "RUSTIC", "").await;

    assert_eq!(results.len(), expected.len(), "no duplicates across pages");
    assert_eq!(ids(&results), expected);
    let first_description_only = results
        .iter()
        .position(|p| !contains_word(&p.name, "rustic"))
        .expect("some match only in the description");
    assert!(
        results[first_description_only..]
            .iter()
            .all(|p| !contains_word(&p.name, "rustic")),
        "name matches rank above description matches"
    );
}

async fn every_word_must_match(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let expected = expected_matches("oak lamp", None);
    assert!(!expected.is_empty());

    let results = search_all(&mut app.client, "Oak, LAMP", "").await;

    assert_eq!(ids(&results), expected);
}

async fn category_filter_narrows_the_results(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let expected = expected_matches("rustic", Some("home"));
    assert!(!expected.is_empty());

    let results = search_all(&mut app.client, "rustic", "home").await;

    assert_eq!(ids(&results), expected);
}

/// The status of a search for `query` that must be refused.
async fn refused(client: &mut CatalogueServiceClient<Channel>, query: &str) -> tonic::Status {
    client
        .search_products(SearchRequest {
            query: query.into(),
            ..Default::default()
        })
        .await
        .expect_err(query)
}

async fn empty_query_is_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    for query in ["", "   "] {
        let status = refused(&mut app.client, query).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "query is required");
    }
}

async fn a_query_without_a_word_is_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    // Punctuation, symbols and the underscore, ASCII and Unicode: no word as
    // `domain::words` reads text, which is how every store's query is split.
    for query in ["!!! ...", "\"*(){}", "¿¡ … —", "_-_ +", "€ © ™"] {
        let status = refused(&mut app.client, query).await;

        assert_eq!(status.code(), Code::InvalidArgument, "{query:?}");
        assert_eq!(
            status.message(),
            "query must contain at least one word",
            "{query:?}"
        );
    }
}

async fn a_repeated_word_counts_once(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let expected = expected_matches("oak", None);
    assert!(!expected.is_empty());

    // 64 copies: the longest query of one word the byte limit lets through.
    let results = search_all(&mut app.client, &"oak ".repeat(64), "").await;

    assert_eq!(ids(&results), expected);
}

async fn more_than_16_distinct_words_is_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let words: Vec<String> = (0..17).map(|n| format!("w{n}")).collect();

    let status = refused(&mut app.client, &words.join(" ")).await;
    let sixteen = search_all(&mut app.client, &words[..16].join(" "), "").await;

    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "query has 17 distinct words; at most 16 are allowed"
    );
    assert!(
        sixteen.is_empty(),
        "16 words are searched (and match nothing)"
    );
}

async fn out_of_range_page_size_and_malformed_token_are_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let bad_requests = [
        SearchRequest {
            query: "oak".into(),
            page_size: domain::MAX_SEARCH_PAGE_SIZE as i32 + 1,
            ..Default::default()
        },
        SearchRequest {
            query: "oak".into(),
            page_size: -5,
            ..Default::default()
        },
        SearchRequest {
            query: "oak".into(),
            page_token: "garbage!".into(),
            ..Default::default()
        },
    ];

    for request in bad_requests {
        let status = app
            .client
            .search_products(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
    }
}
