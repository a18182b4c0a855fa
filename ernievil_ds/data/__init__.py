"""Image-text pairs with region features and scene graphs, and the SGP masking collator."""
