//! The deterministic seed catalogue.
//!
//! Product `n` is derived from `n` alone, so every store, every run and every
//! catalogue size agree on it: a catalogue of 10,000 is the first 10,000 of a
//! catalogue of 100,000. Names and descriptions are built from a small
//! vocabulary so that searches for ordinary words ("oak", "lamp") find a
//! meaningful subset.

use crate::domain::Product;

/// The categories of the seed catalogue, each with the nouns of its products.
pub(crate) const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "books",
        &[
            "novel",
            "cookbook",
            "atlas",
            "journal",
            "biography",
            "anthology",
        ],
    ),
    (
        "electronics",
        &[
            "headphones",
            "speaker",
            "charger",
            "keyboard",
            "monitor",
            "camera",
        ],
    ),
    (
        "garden",
        &[
            "trowel",
            "planter",
            "hose",
            "shears",
            "birdhouse",
            "lantern",
        ],
    ),
    (
        "home",
        &["lamp", "blanket", "cushion", "vase", "mirror", "clock"],
    ),
    (
        "kitchen",
        &[
            "kettle", "skillet", "teapot", "grinder", "knife", "colander",
        ],
    ),
    (
        "outdoor",
        &[
            "tent",
            "backpack",
            "hammock",
            "compass",
            "cooler",
            "flashlight",
        ],
    ),
    (
        "sports",
        &[
            "racket",
            "dumbbell",
            "helmet",
            "jersey",
            "skateboard",
            "bottle",
        ],
    ),
    (
        "toys",
        &["puzzle", "kite", "robot", "marbles", "spinner", "blocks"],
    ),
];

const ADJECTIVES: &[&str] = &[
    "compact",
    "classic",
    "rustic",
    "modern",
    "vintage",
    "premium",
    "portable",
    "handmade",
    "lightweight",
    "sturdy",
    "elegant",
    "cozy",
    "bright",
    "minimalist",
];

const MATERIALS: &[&str] = &[
    "oak", "walnut", "steel", "copper", "linen", "wool", "bamboo", "ceramic", "leather", "cotton",
    "glass", "granite",
];

const FEATURES: &[&str] = &[
    "designed for everyday use",
    "built to last for years",
    "a thoughtful gift for friends and family",
    "easy to clean and care for",
    "ideal for small spaces",
    "finished by hand in a small workshop",
    "tested in harsh conditions",
    "made from responsibly sourced materials",
];

const CLOSINGS: &[&str] = &[
    "Ships in recyclable packaging.",
    "Backed by a two year warranty.",
    "Pairs well with the rest of the collection.",
    "Available while stock lasts.",
    "A favourite of our customers.",
];

/// 2024-01-01T00:00:00Z: the first product's creation time.
const FIRST_CREATED_AT: i64 = 1_704_067_200;

/// The id of the `n`th product (1-based). Zero-padded so that id order is
/// creation order.
pub fn product_id(n: u32) -> String {
    format!("prod-{n:07}")
}

/// The seed catalogue's first `count` products, in id order.
pub fn products(count: u32) -> impl Iterator<Item = Product> {
    (1..=count).map(product)
}

/// The `n`th product (1-based) of the seed catalogue.
pub fn product(n: u32) -> Product {
    let mut rng = SplitMix64(u64::from(n));
    let (category, nouns) = CATEGORIES[rng.below(CATEGORIES.len())];
    let noun = nouns[rng.below(nouns.len())];
    let adjective = ADJECTIVES[rng.below(ADJECTIVES.len())];
    let material = MATERIALS[rng.below(MATERIALS.len())];
    let second_adjective = ADJECTIVES[rng.below(ADJECTIVES.len())];
    let feature = FEATURES[rng.below(FEATURES.len())];
    let closing = CLOSINGS[rng.below(CLOSINGS.len())];
    let id = product_id(n);
    let images = 1 + rng.below(3);
    Product {
        name: format!(
            "{} {} {}",
            capitalise(adjective),
            capitalise(material),
            capitalise(noun)
        ),
        description: format!("A {second_adjective} {noun} in {material}, {feature}. {closing}"),
        price_cents: 199 + rng.below(49_801) as i64,
        stock_qty: rng.below(501) as i32,
        image_urls: (1..=images)
            .map(|image| format!("https://images.example.com/products/{id}/{image}.jpg"))
            .collect(),
        created_at: FIRST_CREATED_AT + i64::from(n) * 600,
        category_id: category.to_owned(),
        id,
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// splitmix64: tiny, fast and fully determined by its seed, which is all a
/// seed catalogue needs (no dependency whose output may change between
/// versions).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_deterministic_and_independent_of_catalogue_size() {
        let small: Vec<_> = products(10).collect();
        let large: Vec<_> = products(1000).take(10).collect();
        assert_eq!(small, large);
        assert_eq!(small[0].id, "prod-0000001");
    }

    #[test]
    fn every_category_is_used() {
        let used: std::collections::BTreeSet<_> =
            products(500).map(|product| product.category_id).collect();
        assert_eq!(used.len(), CATEGORIES.len());
    }
}
