-- Issue 19, item 5 (`make bench-import`): importing a backup code asks whether its user already
-- has a newer one (`domain::legacy::backup_codes`, "the newest set wins"). Without an index on
-- (user_id, created_at) that question read the whole table for every code (the only index by
-- user is partial: live codes), so 500,000 codes took quadratic time.
CREATE INDEX queue_backup_codes_user_created ON auth.queue_backup_codes (user_id, created_at);
