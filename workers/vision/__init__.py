"""Image-classifier (ViT) building blocks: labelled image sets (``images``) and accuracy (``accuracy``)."""
