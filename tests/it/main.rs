mod get_product;
mod health;
mod helpers;
mod list_products;
mod robustness;
mod search_products;
mod shutdown;
