"""Reports rendered for people (HTML), from service results."""
