"""What happens after retrieval, without Lightning: a flight's frames decoded as a track."""
