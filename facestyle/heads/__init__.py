"""Small trainable heads on a frozen, shared backbone: image classification and grid face detection."""
