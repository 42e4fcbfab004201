"""The bottom layer: what every app may import and which imports none of them."""
