from aitrading.service import run
from portfolio_manager.main import create_app

if __name__ == "__main__":
    run(create_app())
