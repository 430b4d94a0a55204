from aitrading.service import run
from feature_engineering.main import create_app

if __name__ == "__main__":
    run(create_app())
