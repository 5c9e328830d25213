"""Labelled and pseudo-labelled reviews, their labels, and the IMDB download."""
