-- Every index costs each write, and settling a delivery changes its state: a new entry in every
-- index of deliveries. deliveries_due (sink, id) over pending rows repeats what
-- deliveries_by_state (sink, state, id) gives a claim already: the pending rows of a sink in order
-- (SQLite dropped it in its 0008).

DROP INDEX IF EXISTS deliveries_due;
