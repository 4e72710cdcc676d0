mod admin;
mod cli;
mod connections;
mod console;
mod consul;
mod dashboards;
mod deadlines;
mod fairness;
mod faults;
mod get_product;
mod health;
mod helpers;
mod list_products;
mod load;
mod log_level;
mod metrics;
mod postgres;
mod pprof;
mod replicas;
mod resilience;
mod robustness;
mod search_products;
mod shutdown;
mod stack;
mod tracing;

// The service's allocator, so heap profiles work here as in the binary.
catalogue::jemalloc_global_allocator!();
