-- The product catalogue, with a weighted full-text vector (name above
-- description) kept by PostgreSQL itself as a generated column. The 'simple'
-- configuration lowercases whole words without stemming, the same matching
-- the SQLite and memory stores do.
CREATE TABLE products (
    id          TEXT        COLLATE "C" NOT NULL PRIMARY KEY, -- byte order, like the other stores
    name        TEXT        NOT NULL,
    description TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL,
    stock_qty   INTEGER     NOT NULL,
    image_urls  TEXT[]      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    category_id TEXT        NOT NULL,
    search      TSVECTOR    GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', name), 'A') ||
        setweight(to_tsvector('simple', description), 'B')
    ) STORED
);

CREATE INDEX products_category_id ON products (category_id, id);
CREATE INDEX products_search ON products USING GIN (search);
