"""Reading and writing images and videos; walking inputs; atomic writes."""
