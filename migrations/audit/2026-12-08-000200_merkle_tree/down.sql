ALTER TABLE audit.checkpoints DROP COLUMN note;
DROP TABLE audit.merkle_trees;
DROP TABLE audit.merkle_hashes;
DROP FUNCTION audit.merkle_tree_grows();
