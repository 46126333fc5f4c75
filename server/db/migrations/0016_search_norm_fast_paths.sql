-- catalog_search_norm (0004) with the same result, ten times cheaper on the names a catalog holds.
--
-- translate() looks each character of its input up in the `from` list, one entry after another: with
-- 0004's ~200 entries (ASCII and Latin capitals, controls, Arabic forms, digits, tashkeel) a name of 30
-- characters cost ~13 us, and every product write pays it four times (three for the stored search_text,
-- which PostgreSQL recomputes on every UPDATE, one for products_sku_norm_idx): a third of a sync batch's
-- INSERT of 200 products. Most texts can meet only a few of those entries, so the work follows from what
-- a text holds:
--   printable ASCII alone           lower() under the C collation, which maps A-Z and nothing else (~1 us)
--   printable ASCII and Arabic      the same, then translate() with 0004's Arabic entries alone (~6 us)
--   anything else                   0004's translate(), as it was
-- Each path maps every character it can meet exactly as 0004 does (the Arabic entries are 0004's, in its
-- order, deletions last; all of them lie in U+0600-06FF), so the result is the same text: products.search_text
-- and products_sku_norm_idx stay valid, with nothing to recompute. tests/db/test_search_norm.py checks each
-- path against the Python twin (server/catalog/search.py).
CREATE OR REPLACE FUNCTION catalog_search_norm(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN t !~ E'[^\\x20-\\x7e]' THEN lower(t COLLATE "C")
    WHEN t !~ E'[^\\x20-\\x7e\\u0600-\\u06ff]' THEN translate(
        lower(t COLLATE "C"),
        E'\u0623\u0625\u0622\u0671\u0629\u0649'
        || E'\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669'
        || E'\u06f0\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6\u06f7\u06f8\u06f9'
        || E'\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652\u0653\u0654\u0655\u0656\u0657\u0658\u0659'
        || E'\u065a\u065b\u065c\u065d\u065e\u065f\u0670\u0640',
        E'\u0627\u0627\u0627\u0627\u0647\u064a'
        || '0123456789'
        || '0123456789'
    )
    ELSE translate(
        t,
        'ABCDEFGHIJKLMNOPQRSTUVWXYZÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ'
        || E'\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10'
        || E'\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f'
        || E'\u0623\u0625\u0622\u0671\u0629\u0649'
        || E'\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669'
        || E'\u06f0\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6\u06f7\u06f8\u06f9'
        || E'\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652\u0653\u0654\u0655\u0656\u0657\u0658\u0659'
        || E'\u065a\u065b\u065c\u065d\u065e\u065f\u0670\u0640',
        'abcdefghijklmnopqrstuvwxyzàáâãäåæçèéêëìíîïðñòóôõöøùúûüýþāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįĳĵķĺļľŀłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷÿźżž'
        || '                                '
        || E'\u0627\u0627\u0627\u0627\u0647\u064a'
        || '0123456789'
        || '0123456789'
    )
END;
