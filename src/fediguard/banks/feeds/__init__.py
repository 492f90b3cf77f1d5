"""Hash feeds between instances: a publisher's banks as signed, ordered batches (docs/feeds.md)."""
