DROP INDEX runs_needing_work;
