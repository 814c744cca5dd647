"""Images at rest: the store, layers, extraction, layouts, config conversion, unpack."""
