# sampling ops
