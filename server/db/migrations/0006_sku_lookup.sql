-- Batch look-up by SKU (`ids=` on the product list, server/catalog/repo.py PRODUCTS_BY_KEYS): a SKU entry
-- matches products whose SKU, normalised as `q` is (catalog_search_norm: case, Arabic-Indic digits, Arabic
-- letter forms), equals it whole; the lowest id answers. One index probe per SKU, however large the catalog.
CREATE INDEX products_sku_norm_idx ON products (catalog_search_norm(sku), id) WHERE is_active;
