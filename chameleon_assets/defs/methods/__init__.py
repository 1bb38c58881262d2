"""The competitors that train their own proxies, and the table of every mixture base models can train on."""
