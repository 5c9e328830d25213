"""The `reviewscore` command: one surface over training and scoring."""
