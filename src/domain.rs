//! The catalogue's own types: products and the validated values a request
//! turns into at the API edge.
//!
//! Every request field is parsed into one of these newtypes before it reaches
//! a store, so the stores never see unchecked input. Nothing here knows about
//! protobuf or tonic.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Page size of `ListProducts` when the request leaves it at 0.
pub const DEFAULT_LIST_PAGE_SIZE: u32 = 50;
/// Largest `ListProducts` page a client may ask for.
pub const MAX_LIST_PAGE_SIZE: u32 = 1000;
/// Page size of `SearchProducts` when the request leaves it at 0.
pub const DEFAULT_SEARCH_PAGE_SIZE: u32 = 20;
/// Largest `SearchProducts` page a client may ask for.
pub const MAX_SEARCH_PAGE_SIZE: u32 = 100;
/// Longest product or category id accepted, in bytes.
pub(crate) const MAX_ID_BYTES: usize = 128;
/// Longest search query accepted, in bytes.
pub(crate) const MAX_QUERY_BYTES: usize = 256;
/// Most distinct words a search query may have: each word is a term every
/// candidate row is scored against, so the cost of a query grows with them.
pub(crate) const MAX_QUERY_WORDS: usize = 16;
/// Deepest search result reachable through page tokens: ranking deeper than
/// this costs the database more than any person paging through results needs.
pub(crate) const MAX_SEARCH_OFFSET: u32 = 10_000;

/// A product as the catalogue stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Money is stored in integer cents: floating point only on the wire.
    pub price_cents: i64,
    pub stock_qty: i32,
    pub image_urls: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub category_id: String,
}

/// Why a request was refused before it reached the store. The message is
/// sent to the client as is, so it names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("product_id is required")]
    MissingProductId,
    #[error("{field} is longer than {MAX_ID_BYTES} bytes")]
    IdTooLong { field: &'static str },
    #[error("{field} must not contain control characters (NUL, newline, ...)")]
    ControlCharacter { field: &'static str },
    #[error("page_size must be between 0 and {max}, got {got}")]
    PageSize { got: i32, max: u32 },
    #[error("page_token is malformed")]
    PageToken,
    #[error("query is required")]
    MissingQuery,
    #[error("query must contain at least one word")]
    NoWord,
    #[error("query is longer than {MAX_QUERY_BYTES} bytes")]
    QueryTooLong,
    #[error("query must not contain a NUL byte")]
    NulInQuery,
    #[error("query has {got} distinct words; at most {MAX_QUERY_WORDS} are allowed")]
    TooManyWords { got: usize },
}

/// A non-empty product id of bounded length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() {
            return Err(InvalidInput::MissingProductId);
        }
        check_id(raw, "product_id")?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProductId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every id must be: at most `MAX_ID_BYTES`, and printable. A NUL
/// byte in particular never reaches a database (PostgreSQL refuses it in
/// text), and no other control character has a place in an id.
fn check_id(raw: &str, field: &'static str) -> Result<(), InvalidInput> {
    if raw.len() > MAX_ID_BYTES {
        return Err(InvalidInput::IdTooLong { field });
    }
    if raw.chars().any(char::is_control) {
        return Err(InvalidInput::ControlCharacter { field });
    }
    Ok(())
}

/// A category filter; an empty field in the request means "no filter".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryId(String);

impl CategoryId {
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, InvalidInput> {
        if raw.is_empty() {
            return Ok(None);
        }
        check_id(raw, "category_id")?;
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A page size within `1..=max`, with 0 in the request meaning `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub fn parse(raw: i32, default: u32, max: u32) -> Result<Self, InvalidInput> {
        match u32::try_from(raw) {
            Ok(0) => Ok(Self(default)),
            Ok(size) if size <= max => Ok(Self(size)),
            _ => Err(InvalidInput::PageSize { got: raw, max }),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Where a `ListProducts` page starts: after this product id. Tokens are
/// opaque to clients (base64url of a tagged id) and tagged so that a search
/// token is not mistaken for a list token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor(pub ProductId);

const LIST_TOKEN_TAG: &str = "list:";
const SEARCH_TOKEN_TAG: &str = "search:";

impl ListCursor {
    /// `None` for an empty token: the first page.
    pub fn decode(token: &str) -> Result<Option<Self>, InvalidInput> {
        match decode_tagged(token, LIST_TOKEN_TAG)? {
            None => Ok(None),
            Some(id) => ProductId::parse(&id)
                .map(|id| Some(Self(id)))
                .map_err(|_| InvalidInput::PageToken),
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{LIST_TOKEN_TAG}{}", self.0))
    }
}

/// Where a `SearchProducts` page starts: the number of results before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchOffset(u32);

impl SearchOffset {
    pub fn decode(token: &str) -> Result<Self, InvalidInput> {
        match decode_tagged(token, SEARCH_TOKEN_TAG)? {
            None => Ok(Self(0)),
            Some(offset) => match offset.parse::<u32>() {
                Ok(offset) if offset <= MAX_SEARCH_OFFSET => Ok(Self(offset)),
                _ => Err(InvalidInput::PageToken),
            },
        }
    }

    /// The token of the page after one of `page_size` results starting here,
    /// or `None` past the deepest reachable result.
    pub fn next(self, page_size: PageSize) -> Option<Self> {
        let next = self.0.checked_add(page_size.get())?;
        (next <= MAX_SEARCH_OFFSET).then_some(Self(next))
    }

    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{SEARCH_TOKEN_TAG}{}", self.0))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

fn decode_tagged(token: &str, tag: &str) -> Result<Option<String>, InvalidInput> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| InvalidInput::PageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| InvalidInput::PageToken)?;
    text.strip_prefix(tag)
        .map(|rest| Some(rest.to_owned()))
        .ok_or(InvalidInput::PageToken)
}

/// A search query broken into lowercase words. Matching is on whole words, so
/// punctuation never reaches a full-text query language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    /// Never empty: a query of punctuation only is refused here, once, so
    /// that no store is handed a full-text query without a term. Distinct
    /// (a repeated word adds nothing but cost), in the order they first
    /// appear, and at most `MAX_QUERY_WORDS`.
    words: Vec<String>,
}

impl SearchText {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.trim().is_empty() {
            return Err(InvalidInput::MissingQuery);
        }
        if raw.len() > MAX_QUERY_BYTES {
            return Err(InvalidInput::QueryTooLong);
        }
        // Words drop it, but a query holding one is no text a person typed.
        if raw.contains('\0') {
            return Err(InvalidInput::NulInQuery);
        }
        let mut words = words(raw);
        let mut seen = std::collections::HashSet::new();
        words.retain(|word| seen.insert(word.clone()));
        if words.is_empty() {
            return Err(InvalidInput::NoWord);
        }
        if words.len() > MAX_QUERY_WORDS {
            return Err(InvalidInput::TooManyWords { got: words.len() });
        }
        Ok(Self { words })
    }

    /// The words every result must contain: at least one.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

/// Lowercase alphanumeric words of `text`, the tokenisation every store uses:
/// a word is a run of characters Unicode calls alphabetic or numeric
/// (`char::is_alphanumeric`); everything else (punctuation, symbols, spaces,
/// `_`) separates words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A validated `ListProducts` request.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    pub after: Option<ProductId>,
    pub category: Option<CategoryId>,
    pub page_size: PageSize,
}

/// A validated `SearchProducts` request.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: SearchText,
    pub category: Option<CategoryId>,
    pub offset: SearchOffset,
    pub page_size: PageSize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_zero_means_default_and_bounds_are_inclusive() {
        assert_eq!(PageSize::parse(0, 50, 1000).unwrap().get(), 50);
        assert_eq!(PageSize::parse(1000, 50, 1000).unwrap().get(), 1000);
        assert_eq!(
            PageSize::parse(1001, 50, 1000),
            Err(InvalidInput::PageSize {
                got: 1001,
                max: 1000
            })
        );
        assert!(PageSize::parse(-1, 50, 1000).is_err());
    }

    #[test]
    fn list_cursor_round_trips_and_rejects_search_tokens() {
        let cursor = ListCursor(ProductId::parse("prod-000042").unwrap());
        let token = cursor.encode();
        assert_eq!(ListCursor::decode(&token), Ok(Some(cursor)));
        let search_token = SearchOffset(20).encode();
        assert_eq!(
            ListCursor::decode(&search_token),
            Err(InvalidInput::PageToken)
        );
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for token in [
            "%%%",
            "bm90IGEgdG9rZW4",
            "c2VhcmNoOi0x",
            "c2VhcmNoOjk5OTk5OQ",
        ] {
            assert_eq!(
                SearchOffset::decode(token),
                Err(InvalidInput::PageToken),
                "{token}"
            );
        }
        assert_eq!(ListCursor::decode("bGlzdDo"), Err(InvalidInput::PageToken));
    }

    #[test]
    fn search_text_splits_into_lowercase_words() {
        let text = SearchText::parse("  Oak, LAMP!  ").unwrap();
        assert_eq!(text.words(), ["oak", "lamp"]);
        assert_eq!(SearchText::parse("   "), Err(InvalidInput::MissingQuery));
        assert_eq!(
            SearchText::parse("Café_2½ Straße").unwrap().words(),
            ["café", "2½", "straße"]
        );
    }

    #[test]
    fn search_words_are_deduplicated_and_at_most_16() {
        let repeated = "oak ".repeat(64);
        assert_eq!(SearchText::parse(&repeated).unwrap().words(), ["oak"]);
        assert_eq!(
            SearchText::parse("Oak lamp OAK, lamp rustic")
                .unwrap()
                .words(),
            ["oak", "lamp", "rustic"]
        );
        let words = |count: usize| {
            (0..count)
                .map(|n| format!("w{n} w{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(SearchText::parse(&words(16)).unwrap().words().len(), 16);
        assert_eq!(
            SearchText::parse(&words(17)),
            Err(InvalidInput::TooManyWords { got: 17 })
        );
    }

    #[test]
    fn search_text_without_a_word_is_refused() {
        for raw in ["!!! ...", "_", "¿¡ … —", "€ © ™ ±"] {
            assert_eq!(SearchText::parse(raw), Err(InvalidInput::NoWord), "{raw:?}");
        }
    }

    #[test]
    fn ids_and_queries_with_a_nul_or_a_control_character_are_refused() {
        for raw in ["prod\0x", "\0", "prod-1\n", "a\u{1b}[0m"] {
            assert_eq!(
                ProductId::parse(raw),
                Err(InvalidInput::ControlCharacter {
                    field: "product_id"
                }),
                "{raw:?}"
            );
            assert_eq!(
                CategoryId::parse_optional(raw),
                Err(InvalidInput::ControlCharacter {
                    field: "category_id"
                }),
                "{raw:?}"
            );
        }
        assert_eq!(
            SearchText::parse("oak\0lamp"),
            Err(InvalidInput::NulInQuery)
        );
        assert_eq!(
            SearchText::parse("oak\tlamp").unwrap().words(),
            ["oak", "lamp"]
        );
        let cursor = URL_SAFE_NO_PAD.encode("list:prod\0x");
        assert_eq!(ListCursor::decode(&cursor), Err(InvalidInput::PageToken));
    }

    #[test]
    fn search_offset_stops_at_the_deepest_page() {
        let size = PageSize::parse(100, 20, 100).unwrap();
        assert_eq!(
            SearchOffset(MAX_SEARCH_OFFSET - 100)
                .next(size)
                .map(|o| o.get()),
            Some(MAX_SEARCH_OFFSET)
        );
        assert_eq!(SearchOffset(MAX_SEARCH_OFFSET).next(size), None);
    }
}
