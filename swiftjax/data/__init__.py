"""Training data: reading rows in the formats users have, rendering them with the chat
template with labels on assistant tokens only, and packing them into fixed-length batches."""
