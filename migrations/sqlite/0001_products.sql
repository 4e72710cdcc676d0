-- The product catalogue, with an FTS5 index over name and description kept
-- in step by triggers (external-content table: the text is stored once).
CREATE TABLE products (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    price_cents INTEGER NOT NULL,
    stock_qty   INTEGER NOT NULL,
    image_urls  TEXT    NOT NULL, -- JSON array of strings
    created_at  INTEGER NOT NULL, -- seconds since the Unix epoch
    category_id TEXT    NOT NULL
);

CREATE INDEX products_category_id ON products (category_id, id);

CREATE VIRTUAL TABLE products_fts USING fts5 (
    name,
    description,
    content = 'products',
    content_rowid = 'rowid',
    tokenize = 'unicode61'
);

CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
    INSERT INTO products_fts (rowid, name, description)
    VALUES (new.rowid, new.name, new.description);
END;

CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, name, description)
    VALUES ('delete', old.rowid, old.name, old.description);
END;

CREATE TRIGGER products_fts_update AFTER UPDATE ON products BEGIN
    INSERT INTO products_fts (products_fts, rowid, name, description)
    VALUES ('delete', old.rowid, old.name, old.description);
    INSERT INTO products_fts (rowid, name, description)
    VALUES (new.rowid, new.name, new.description);
END;
