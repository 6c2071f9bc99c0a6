"""Jobs that run the pipeline over a corpus: conversion on Ray, and the end-to-end demo."""
