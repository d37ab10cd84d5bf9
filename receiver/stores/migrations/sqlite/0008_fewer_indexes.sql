-- Every index costs each write. deliveries_due (sink, id) over pending rows repeats what
-- deliveries_by_state (sink, state, id) gives a claim already: the pending rows of a sink in order.

DROP INDEX IF EXISTS deliveries_due;
