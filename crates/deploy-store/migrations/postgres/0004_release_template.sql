-- A release's service definition: the compose template text (NULL: none), immutable like the release.
ALTER TABLE releases ADD COLUMN template TEXT;
