-- The sync status view's transaction reads only: the first statement of every view connection.
SET TRANSACTION READ ONLY
