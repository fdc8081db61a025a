"""Neural networks and their losses (VAMP scores, VAMPNet, SRV, MDN, LSTM, cWGAN)."""
