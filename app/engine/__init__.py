"""The interview engine: question selection by (conformal) information pursuit. Pure Python."""
