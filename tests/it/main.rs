mod get_product;
mod health;
mod helpers;
mod list_products;
mod pprof;
mod robustness;
mod search_products;
mod shutdown;

// The service's allocator, so heap profiles work here as in the binary.
catalogue::jemalloc_global_allocator!();
