"""The device agent: records locally, survives crashes and outages, uploads when it can.

Imports nothing of Jupyter, librosa, ipywidgets or Tornado, so that it installs on a
Raspberry Pi or in Termux.
"""
