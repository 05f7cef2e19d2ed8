"""Who may do what: environments and their secret keys, public access tokens."""
