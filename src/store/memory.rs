//! The seed catalogue held in process memory: the serving path without a
//! database, for benchmarks and tests.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{ListPage, Store, StoreError, seed};
use crate::domain::{Product, ProductId, SearchQuery, words};

/// Immutable after construction, so reads need no lock.
pub struct MemoryStore {
    /// Sorted by id: list pages are a binary search and a slice.
    products: Vec<Product>,
    by_id: HashMap<String, usize>,
    /// For each lowercase word, the sorted indexes of the products whose
    /// name or description contains it.
    by_word: HashMap<String, Vec<usize>>,
}

impl MemoryStore {
    pub fn seeded(count: u32) -> Self {
        Self::new(seed::products(count).collect())
    }

    pub fn new(mut products: Vec<Product>) -> Self {
        products.sort_by(|a, b| a.id.cmp(&b.id));
        let by_id = products
            .iter()
            .enumerate()
            .map(|(index, product)| (product.id.clone(), index))
            .collect();
        let mut by_word: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, product) in products.iter().enumerate() {
            for word in words(&product.name)
                .into_iter()
                .chain(words(&product.description))
            {
                let indexes = by_word.entry(word).or_default();
                if indexes.last() != Some(&index) {
                    indexes.push(index);
                }
            }
        }
        Self {
            products,
            by_id,
            by_word,
        }
    }

    /// Name matches rank above description matches, like the weighted
    /// full-text ranking of the database stores.
    fn score(product: &Product, query_words: &[String]) -> usize {
        let name = words(&product.name);
        let description = words(&product.description);
        query_words
            .iter()
            .map(|word| {
                10 * usize::from(name.contains(word)) + usize::from(description.contains(word))
            })
            .sum()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn system(&self) -> &'static str {
        "memory"
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        Ok(self
            .by_id
            .get(id.as_str())
            .map(|&index| self.products[index].clone()))
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError> {
        let start = match page.after {
            Some(after) => self
                .products
                .partition_point(|product| product.id.as_str() <= after.as_str()),
            None => 0,
        };
        Ok(self.products[start..]
            .iter()
            .filter(|product| {
                page.category
                    .is_none_or(|category| product.category_id == category.as_str())
            })
            .take(page.limit as usize)
            .cloned()
            .collect())
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        let query_words = query.text.words();
        let Some((first, rest)) = query_words.split_first() else {
            return Ok(Vec::new());
        };
        let Some(candidates) = self.by_word.get(first) else {
            return Ok(Vec::new());
        };
        let mut matches: Vec<(usize, &Product)> = candidates
            .iter()
            .filter(|index| {
                rest.iter().all(|word| {
                    self.by_word
                        .get(word)
                        .is_some_and(|indexes| indexes.binary_search(index).is_ok())
                })
            })
            .map(|&index| &self.products[index])
            .filter(|product| {
                query
                    .category
                    .as_ref()
                    .is_none_or(|category| product.category_id == category.as_str())
            })
            .map(|product| (Self::score(product, query_words), product))
            .collect();
        // Candidates are in id order already: a stable sort keeps ties by id.
        matches.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
        Ok(matches
            .into_iter()
            .skip(query.offset.get() as usize)
            .take(limit as usize)
            .map(|(_, product)| product.clone())
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
