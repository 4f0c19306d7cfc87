"""Streamlit UI helpers for the lungseg browser viewer (may import streamlit; lungseg/ never does)."""
