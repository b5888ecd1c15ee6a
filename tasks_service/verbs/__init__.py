"""Groups of store verbs that `store.Store` is assembled from, each over the primitives
of `base.StoreIO` (one read, the queued writes) that every engine gives."""
