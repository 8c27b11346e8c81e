"""bounce-exporter: which remote domains defer or bounce your mail, with which SMTP reply, since when."""

__version__ = "0.1.0"
