"""`mixft report`: Markdown/HTML report with PNG plots across eval results and training runs."""
